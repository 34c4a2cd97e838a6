"""The 0.1.1 state calls against FakeHost: increment on decimal text,
compare-and-swap, keys that expire on the virtual clock, keys by prefix.
The semantics are the WIT's doc comments (wit/wsgate.wit, interface host)."""

import pytest

import wsgate_testing
from wsgate_testing import FakeHost, Limits

import wsgate  # noqa: E402
from listeners import host_error
from wsgate import Error, StateError

state = wsgate.host


@pytest.fixture
def host():
    return FakeHost()


def test_increment_counts_from_an_absent_key_and_stores_decimal_text(host):
    assert state.state_increment("hits", 1) == 1
    assert state.state_increment("hits", 41) == 42
    assert state.state_increment("hits", -50) == -8
    assert state.state_get("hits") == b"-8"
    state.state_set("n", b"+7")
    assert state.state_increment("n", 0) == 7 and state.state_get("n") == b"7"


def test_increment_refuses_what_is_not_a_decimal_s64(host):
    for value in (b"", b"x", b"1.5", b" 1", b"1 ", b"0x10", "٣".encode()):
        state.state_set("k", value)
        assert host_error(state.state_increment, "k", 1) is StateError.NOT_A_NUMBER, value
        assert state.state_get("k") == value  # untouched
    state.state_set("k", str(2**63 - 1).encode())
    assert host_error(state.state_increment, "k", 1) is StateError.NOT_A_NUMBER  # overflow
    assert state.state_increment("k", -1) == 2**63 - 2
    state.state_set("k", str(2**63).encode())
    assert host_error(state.state_increment, "k", 0) is StateError.NOT_A_NUMBER
    with pytest.raises(ValueError):
        state.state_increment("k", 2**63)  # the bindings cannot lower it
    with pytest.raises(TypeError):
        state.state_increment("k", "1")


def test_compare_and_swap(host):
    assert state.state_compare_and_swap("lock", None, b"ann") is True  # absent -> set
    assert state.state_compare_and_swap("lock", None, b"bob") is False
    assert state.state_compare_and_swap("lock", b"bob", None) is False
    assert state.state_get("lock") == b"ann"
    assert state.state_compare_and_swap("lock", b"ann", b"bob") is True
    assert state.state_compare_and_swap("lock", b"bob", None) is True  # delete
    assert state.state_get("lock") is None and "lock" not in host.state


def test_an_expiring_key_is_gone_after_its_ttl(host):
    state.state_set_expiring("session", b"s1", 1000)
    host.advance(999)
    assert state.state_get("session") == b"s1"
    assert state.state_keys("", 10) == ["session"]
    host.advance(1)
    assert state.state_get("session") is None
    assert state.state_keys("", 10) == [] and host.state == {}


def test_set_and_a_successful_swap_make_a_key_permanent(host):
    state.state_set_expiring("a", b"1", 10)
    state.state_set("a", b"2")
    state.state_set_expiring("b", b"1", 10)
    assert state.state_compare_and_swap("b", b"x", b"2") is False  # a failed swap keeps the ttl
    state.state_set_expiring("c", b"1", 10)
    assert state.state_compare_and_swap("c", b"1", b"2") is True
    host.advance(10)
    assert (state.state_get("a"), state.state_get("b"), state.state_get("c")) == (b"2", None, b"2")


def test_increment_keeps_the_ttl(host):
    state.state_set_expiring("rate", b"0", 100)
    assert state.state_increment("rate", 1) == 1
    host.advance(100)
    assert state.state_get("rate") is None
    assert state.state_increment("rate", 1) == 1  # counts from 0 again


def test_keys_by_prefix_in_byte_order_and_bounded(host):
    for key in ("user:b", "user:a", "room:1", "user:ä", "user:Z", "users"):
        state.state_set(key, b"")
    assert state.state_keys("user:", 10) == ["user:Z", "user:a", "user:b", "user:ä"]
    assert state.state_keys("user:", 2) == ["user:Z", "user:a"]
    assert state.state_keys("", 100) == sorted(host.state, key=str.encode)
    assert state.state_keys("nothing", 5) == [] and state.state_keys("user:", 0) == []
    small = FakeHost(limits=Limits(state_keys_listed=3))
    for i in range(5):
        small.state_set(f"k{i}", b"")
    assert small.state_keys("k", 1000) == ["k0", "k1", "k2"]


def test_bad_keys_and_ttls_are_invalid_arguments(host):
    long_key = "k" * (Limits().max_name_len + 1)
    assert host_error(state.state_increment, "", 1) is StateError.INVALID_ARGUMENT
    assert host_error(state.state_increment, long_key, 1) is StateError.INVALID_ARGUMENT
    assert host_error(state.state_compare_and_swap, "", None, b"x") is StateError.INVALID_ARGUMENT
    assert host_error(state.state_set_expiring, "", b"x", 10) is StateError.INVALID_ARGUMENT
    assert host_error(state.state_set_expiring, "k", b"x", 0) is StateError.INVALID_ARGUMENT
    assert host.state == {}


def test_the_new_calls_count_against_state_bytes():
    host = FakeHost(limits=Limits(state_bytes=2 * 64 + 9))  # an entry costs 64 + key + value
    host.state_set("a", b"123456")  # 71
    assert host_error(host.state_increment, "b", 1000) is StateError.LIMIT_REACHED  # +69
    assert host_error(host.state_compare_and_swap, "b", None, b"12") is StateError.LIMIT_REACHED
    assert host_error(host.state_set_expiring, "b", b"12", 5) is StateError.LIMIT_REACHED
    assert host_error(host.state_set, "b", b"12") is Error.LIMIT_REACHED  # 0.1.0's error type
    assert host.state_increment("b", 5) == 5  # +66 fits: 137
    assert host.state_increment("a", -123455) == 1  # shrinking frees bytes: 132
    host.state_set("b", None)  # 66
    host.state_set_expiring("c", b"", 1)  # 131
    assert host_error(host.state_set, "d", b"12") is Error.LIMIT_REACHED
    host.advance(1)  # an expired key frees its bytes
    host.state_set("d", b"12")


def test_state_error_is_what_the_bindings_raise():
    FakeHost()
    with pytest.raises(wsgate.HostError) as e:
        state.state_increment("", 1)
    assert isinstance(e.value.value, StateError) and wsgate_testing.StateError is StateError
