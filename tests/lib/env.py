"""Where the binaries under test are, and the credentials every test uses.
ctest exports PVESIM and BIN_DIR (CMakeLists.txt); by hand, the sanitizer
build's output directory is the default (the benchmarks set PVESIM to the
release build's before they import this); PROXD, when set, names proxd."""
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN_DIR = os.environ.get("BIN_DIR", os.path.join(ROOT, "build", "asan"))
PVESIM = os.environ.get("PVESIM", os.path.join(BIN_DIR, "pvesim"))
PROXD = os.environ.get("PROXD", os.path.join(os.path.dirname(PVESIM), "proxd"))

# pvesim's API token and root password, and the token proxd uses on it
TOKEN_ID = "root@pam!ci"
TOKEN_SECRET = "8a3c3c4e-0b8e-4a7b-9a52-1f0c2d3e4f50"
TOKEN = TOKEN_ID + "=" + TOKEN_SECRET
PASSWORD = "SECRET"
PROXCTL = os.path.join(os.path.dirname(PVESIM), "proxctl")
