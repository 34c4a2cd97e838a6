# Puts the SDK (sdk/plugin-sdk/python: wsgate, wsgate_testing) on the import
# path, so plain `python3 -m pytest` works here as well as `wsgate test`.
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "sdk" / "plugin-sdk" / "python"))
