"""The ReLU gate: the one building block of every compiled MLP, and why it is exact.

A *gate* is two hidden ReLU units that read the same affine function `z = w . x + b` of the
residual `x` and write `c` (a residual vector) with opposite signs:

    relu(z + 0.5) - relu(z - 0.5) = clamp(z + 0.5, 0, 1),

which is 1 for z >= 0.5 and 0 for z <= -0.5 (in real arithmetic, with no approximation). In
floating point an "off" gate writes exactly 0 (two ReLUs of negative numbers); an "on" gate's two
pre-activations are rounded separately, so it writes 1 to within one ulp of `z` (float32:
|z| * 2^-23, at most about 6e-4 for the Counter at max_seq_len 48, where |z| <= L). Each compiled
MLP is a sum of gates, chosen so that on every input the program can meet, every `z` lies outside
(-0.5, 0.5) with room to spare, so these errors never flip a gate downstream:

- *lookup* on a one-hot input (categorical `Map`): one gate per input value `v`, `z = 2 x_v - 1`,
  `c = enc(f(v))`. The gate of the present value has z = 1, every other z = -1; errors below 0.25
  in the one-hot input change nothing.
- *pair lookup* (`SequenceMap`): one gate per pair `(u, v)`, `z = 2 x_u + 2 x_v - 3` (both present:
  z = 1; one: -1; none: -3). When both inputs are the same SOp, only the pairs `(u, u)` occur
  and it is a lookup on that SOp.
- *staircase* on a scalar input with known sorted values `v_0 < ... < v_m` (numerical `Map`,
  `SelectorWidth`): a base gate that is 1 off BOS, writing `enc(f(v_0))`, and one gate per step,
  `z = L (x - t_i)` with `t_i = (v_{i-1} + v_i) / 2`, writing `enc(f(v_i)) - enc(f(v_{i-1}))`.
  With `L = 2 / min_gap` every value lies at |z| >= 1, so the sum telescopes to `enc(f(v))` for
  input `v` exactly, for any input error below min_gap / 4. (Tracr approximates this map with a
  fixed-size hidden layer; that is where its Counter fails for 10 or more `a`s.)

BOS: the residual at BOS is known exactly (`tokens:BOS` and every SelectorWidth's `bos_weight` are
1, every SOp dimension 0), so each gate's `z` at BOS, `z_bos`, is known. A gate with
`z_bos > -1` also reads `beta * tokens:BOS` with `beta = -(z_bos + 1)`, so `z <= -1` at BOS and
every MLP writes exactly 0 there, which keeps BOS a clean "attend here when nothing is selected"
key for every later attention. Lookups (`z_bos = -1`) and the SelectorWidth staircase (ordered
from x = 1, BOS's value, so its steps are off at BOS) need no such term; only the base gates do.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from jaxtyping import Float


@dataclass
class Gate:
    """One gate: reads `w . x + b` (sparse `w`: residual index -> weight), writes `c`."""

    w: dict[int, float] = field(default_factory=dict)
    b: float = 0.0
    c: dict[int, float] = field(default_factory=dict)


def gate_weights(
    gates: list[Gate], d_model: int, d_mlp: int, bos_dim: int,
    bos_resid: dict[int, float] | None = None,
) -> tuple[Float[np.ndarray, "d_model d_mlp"], Float[np.ndarray, " d_mlp"],
           Float[np.ndarray, "d_mlp d_model"]]:
    """The MLP (`W_in`, `b_in`, `W_out`) of `gates`, zero-padded to `d_mlp` hidden units.

    Args:
        gates: The gates of one layer (two hidden units each).
        d_model: Residual width.
        d_mlp: Hidden width of the model (>= 2 * len(gates)).
        bos_dim: Residual index of `tokens:BOS`, read by the gates that are not off at BOS.
        bos_resid: The residual at BOS (sparse; default: 1 at `bos_dim`, 0 elsewhere).
    """
    bos_resid = {bos_dim: 1.0} if bos_resid is None else bos_resid
    w_in = np.zeros((d_model, d_mlp))
    b_in = np.zeros(d_mlp)
    w_out = np.zeros((d_mlp, d_model))
    for g, gate in enumerate(gates):
        z_bos = sum(v * bos_resid.get(i, 0.0) for i, v in gate.w.items()) + gate.b
        beta = min(0.0, -(z_bos + 1.0))
        for unit, shift, sign in ((2 * g, 0.5, 1.0), (2 * g + 1, -0.5, -1.0)):
            for i, v in gate.w.items():
                w_in[i, unit] += v
            w_in[bos_dim, unit] += beta
            b_in[unit] = gate.b + shift
            for i, v in gate.c.items():
                w_out[unit, i] += sign * v
    return w_in, b_in, w_out
