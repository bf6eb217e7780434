"""Our KServe V2 proto against Triton's own (as shipped inside tritonclient): every message,
field name, number, type and label we define must be identical to Triton's, so any Triton
or KServe client decodes what infermesh sends. Compiled with grpc_tools' protoc."""
import os
import tempfile
from pathlib import Path

from grpc_tools import protoc
from google.protobuf import descriptor_pb2
from tritonclient.grpc import service_pb2

ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = ROOT / "inference" / "proto" / "proto"


def ours():
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "fds.bin")
        rc = protoc.main(["protoc", f"-I{PROTO_DIR}", f"--descriptor_set_out={out}",
                          "kserve/grpc_predict_v2.proto"])
        assert rc == 0
        fds = descriptor_pb2.FileDescriptorSet()
        fds.ParseFromString(Path(out).read_bytes())
    return fds.file[0]


def walk(messages, prefix):
    for m in messages:
        name = f"{prefix}.{m.name}"
        yield name, m
        yield from walk(m.nested_type, name)


def test_every_message_and_field_matches_triton():
    mine = ours()
    assert mine.package == "inference"
    pool = service_pb2.DESCRIPTOR.pool
    checked = 0
    for full, msg in walk(mine.message_type, "inference"):
        if msg.options.map_entry:
            continue
        theirs = pool.FindMessageTypeByName(full)
        by_number = {f.number: f for f in theirs.fields}
        for f in msg.field:
            t = by_number.get(f.number)
            assert t is not None, f"{full}.{f.name} = {f.number} is not in Triton's {full}"
            assert t.name == f.name, f"{full} field {f.number}: ours {f.name}, Triton's {t.name}"
            assert t.type == f.type, f"{full}.{f.name}: type {f.type} vs {t.type}"
            assert t.is_repeated == (f.label == descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED), f"{full}.{f.name}: repeated differs"
            checked += 1
    assert checked > 50
    service = mine.service[0]
    triton = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    for method in service.method:
        t = triton.methods_by_name[method.name]
        assert t.input_type.full_name == method.input_type.lstrip(".")
        assert t.output_type.full_name == method.output_type.lstrip(".")
