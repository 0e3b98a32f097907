"""A RASP subset, its reference evaluator, and an exact compiler to transformer weights.

RASP (Weiss et al., 2021) is the language the paper's compiled models are written in (§4, App. B.1:
the Counter and Max-identifier programs, compiled with Tracr). Modules, bottom to top:

- `expr`: the expressions (`tokens`, `indices`, `Map`, `SequenceMap`, `Select`, `Aggregate`,
  `SelectorWidth`), small frozen classes;
- `evaluator`: `evaluate(program, tokens)`, the reference semantics in plain Python;
- `mlp`: the ReLU "gate" from which every compiled MLP is built;
- `heads`: the attention heads of `Select` + `Aggregate` and `SelectorWidth`;
- `programs`: the paper's Counter and Max-identifier;
- `compiler`: `compile_program(program, vocab, max_seq_len)`, giving
- `description`: `CompiledProgram`, a plain description (config dict, weights named by
  TransformerLens state-dict keys, residual labels, input and output encoding).

This package imports nothing of wrapperlens; `wrapperlens.compiled` turns a description into a
HookedTransformer.
"""

from tasks.rasp.compiler import RASPCompileError, compile_program
from tasks.rasp.description import CompiledProgram
from tasks.rasp.evaluator import RASPEvaluationError, evaluate
from tasks.rasp.expr import (
    CATEGORICAL,
    NUMERICAL,
    Aggregate,
    Comparison,
    Indices,
    Map,
    Select,
    SelectorWidth,
    SequenceMap,
    SOp,
    Tokens,
    indices,
    tokens,
)
from tasks.rasp.programs import counter, counter_alg1, max_identifier

__all__ = [
    "CATEGORICAL", "NUMERICAL", "Aggregate", "Comparison", "CompiledProgram", "Indices", "Map",
    "RASPCompileError", "RASPEvaluationError", "Select", "SelectorWidth", "SequenceMap", "SOp",
    "Tokens", "compile_program", "counter", "counter_alg1", "evaluate", "indices", "max_identifier", "tokens",
]
