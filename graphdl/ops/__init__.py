"""The op library: one module per op family, each op defined once (an `OpDef` in
`graphdl.ops.registry`). Importing this package registers every op; a new family module
is added to the list below."""

from graphdl.ops import (  # noqa: F401  (each module registers its ops)
    attention,
    control,
    conv,
    elementwise,
    fused,
    image,
    linalg,
    losses,
    matmul,
    nn,
    norm,
    optim,
    pool,
    reduce,
    shape,
    sources,
)
