"""Compiler flags and proto rules for Tardigrade's C code."""

# Every target of ours compiles with these; .bazelrc adds the language level.
TG_COPTS = [
    "-Wall",
    "-Wextra",
    "-Wshadow",
    "-Wstrict-prototypes",
    "-Wmissing-prototypes",
    "-Wno-unused-parameter",
    "-D_GNU_SOURCE",
]

# Generated protobuf-c code is not ours to warn about.
TG_PROTO_COPTS = ["-w"]

def tg_c_proto_library(name, srcs, deps = [], visibility = None):
    """Compiles .proto files with protoc-c into a cc_library.

    Paths in `import` statements are relative to the workspace root (for
    example `import "proto/etcd/kv.proto";`), and so are the generated headers:
    #include "proto/etcd/kv.pb-c.h".
    """
    gen_c = [s[:-len(".proto")] + ".pb-c.c" for s in srcs]
    gen_h = [s[:-len(".proto")] + ".pb-c.h" for s in srcs]
    native.genrule(
        name = name + "_gen",
        srcs = srcs + [d + "_srcs" for d in deps],
        outs = gen_c + gen_h,
        cmd = "protoc-c --proto_path=. --c_out=$(GENDIR) " +
              " ".join(["$(location %s)" % s for s in srcs]),
        message = "protoc-c " + name,
    )
    native.filegroup(
        name = name + "_srcs",
        srcs = srcs + [d + "_srcs" for d in deps],
        visibility = visibility,
    )
    native.cc_library(
        name = name,
        srcs = gen_c,
        hdrs = gen_h,
        copts = TG_PROTO_COPTS,
        deps = deps,
        linkopts = ["-lprotobuf-c"],
        visibility = visibility,
    )
