// The bindings `wit-bindgen c` generates (plugin.c), compiled with the
// host calls that deliver to connections or close one renamed: the names
// plugins call (`wsgate_plugin_host_send` and the five others below) are
// then wsgate.c's, which note that a delivery happened and call these.
// The default `on-messages` needs to know, to stop after such a message
// (see wsgate.h).
//
// Build this file, with the generated files on the include path, instead
// of plugin.c. Building plugin.c too, or instead, fails to link: its host
// calls clash with wsgate.c's, and wsgate.c's calls of these are missing.
#define wsgate_plugin_host_send wsgate_generated_host_send
#define wsgate_plugin_host_broadcast wsgate_generated_host_broadcast
#define wsgate_plugin_host_close wsgate_generated_host_close
#define wsgate_plugin_host_publish wsgate_generated_host_publish
#define wsgate_plugin_host_publish_recorded wsgate_generated_host_publish_recorded
#define wsgate_plugin_host_send_to_tag wsgate_generated_host_send_to_tag

#include "plugin.c"
