#!/usr/bin/env bash
# rampart scan vs picklescan and modelscan (PyPI), same inputs, one run, process start included.
#   1. a 1 GiB PyTorch-layout checkpoint (zip: data.pkl with persistent ids, stored tensor data);
#   2. a directory of 500 small pickles.
# Inputs are generated into a temporary directory (removed at exit). Each tool runs 3 times per input; the best
# wall time is reported, with the ratio peer / rampart. Usage: bench/scan.sh  (RAMPART_PEERS_VENV picks the venv)
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${RAMPART_PEERS_VENV:-$HOME/.cache/rampart/venv-peers}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -c "import picklescan, modelscan" 2>/dev/null ||
  "$venv/bin/pip" install -q --disable-pip-version-check picklescan==1.0.5 modelscan==0.8.8 >&2

target="${CARGO_TARGET_DIR:-target}"
echo "building rampart (release)..." >&2
cargo build -q --release -p rampart >&2
rampart="$target/release/rampart"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "generating inputs in $work..." >&2
"$venv/bin/python" - "$work" <<'PY'
import collections, os, pickle, sys, zipfile

work = sys.argv[1]

class FloatStorage:  # stands in for torch.FloatStorage: pickled by reference as `torch.FloatStorage`
    pass
FloatStorage.__module__, FloatStorage.__qualname__ = "torch", "FloatStorage"

class Pickler(pickle.Pickler):
    """Writes what torch.save writes: tensors as _rebuild_tensor_v2 over persistent storage ids."""
    def persistent_id(self, obj):
        return ("storage", FloatStorage, obj.key, "cpu", obj.numel) if isinstance(obj, Storage) else None

class Storage:
    def __init__(self, key, numel):
        self.key, self.numel = key, numel

def rebuild(*args):
    pass
rebuild.__module__, rebuild.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
sys.modules.setdefault("torch", type(sys)("torch")).FloatStorage = FloatStorage
sys.modules.setdefault("torch._utils", type(sys)("torch._utils"))._rebuild_tensor_v2 = rebuild

class Tensor:
    def __init__(self, storage, shape):
        self.storage, self.shape = storage, shape
    def __reduce__(self):
        stride = tuple(int(__import__("math").prod(self.shape[i + 1:])) for i in range(len(self.shape)))
        return (rebuild, (self.storage, 0, self.shape, stride, False, collections.OrderedDict()))

# 64 tensors of 4 Mi floats (16 MiB each): 1 GiB of tensor data.
numel = 4 << 20
state = collections.OrderedDict((f"layer{i}.weight", Tensor(Storage(str(i), numel), (2048, 2048))) for i in range(64))
import io
buf = io.BytesIO()
Pickler(buf, protocol=2).dump(state)
block = os.urandom(1 << 20) * 16
with zipfile.ZipFile(os.path.join(work, "checkpoint.pt"), "w", zipfile.ZIP_STORED) as z:
    z.writestr("archive/data.pkl", buf.getvalue())
    z.writestr("archive/byteorder", "little")
    for i in range(64):
        z.writestr(f"archive/data/{i}", block)
    z.writestr("archive/version", "3\n")

small = os.path.join(work, "pickles")
os.mkdir(small)
for i in range(500):
    obj = {"step": i, "lr": 1e-3, "history": list(range(i % 50)), "cfg": collections.OrderedDict(name=f"run{i}", layers=[64, 128, 10])}
    with open(os.path.join(small, f"p{i:03}.pkl"), "wb") as f:
        pickle.dump(obj, f, protocol=i % 6)
PY
du -sh "$work/checkpoint.pt" "$work/pickles" >&2

best() { # best of 3 wall times in seconds for the command in "$@"
  local b=999999 t s e
  for _ in 1 2 3; do
    s=$(date +%s.%N); "$@" >/dev/null 2>&1 || true; e=$(date +%s.%N)
    t=$(echo "$e - $s" | bc -l); b=$(echo "if ($t < $b) $t else $b" | bc -l)
  done
  printf '%.3f' "$b"
}

# Sanity: each tool must really read the inputs (rampart exits 0 on these benign files).
"$rampart" scan "$work/checkpoint.pt" "$work/pickles" >&2

printf '\n%-22s %12s %12s %12s %14s %14s\n' input rampart picklescan modelscan picklescan/r modelscan/r
for input in checkpoint.pt pickles; do
  cat "$work/$input" >/dev/null 2>&1 || find "$work/$input" -type f -exec cat {} + >/dev/null
  r=$(best "$rampart" scan "$work/$input")
  p=$(best "$venv/bin/picklescan" -p "$work/$input")
  m=$(best "$venv/bin/modelscan" -p "$work/$input")
  printf '%-22s %11ss %11ss %11ss %13.1fx %13.1fx\n' "$input" "$r" "$p" "$m" "$(echo "$p / $r" | bc -l)" "$(echo "$m / $r" | bc -l)"
done
