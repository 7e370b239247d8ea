# Runs every `case_*` function of a MicroPython test module and prints one JSON
# line per case: {"case": name, "ok": bool, "error": text}. Usage:
#   micropython -X heapsize=100K mp_runner.py MODULE [CASE]
import gc
import io
import json
import sys

mod_name = sys.argv[1]
only = sys.argv[2] if len(sys.argv) > 2 else None
mod = __import__(mod_name)
names = sorted(n for n in dir(mod) if n.startswith("case_") and (only is None or n == only))
for name in names:
    gc.collect()
    try:
        getattr(mod, name)()
        print(json.dumps({"case": name, "ok": True, "error": ""}))
    except Exception as e:  # report every failure, keep going
        buf = io.StringIO()
        sys.print_exception(e, buf)
        print(json.dumps({"case": name, "ok": False, "error": buf.getvalue()}))
