"""A frontend's filtering, squared modulus and pooling, computed together.

LEAF's first three stages (Section 3 of the paper) compute, for each channel
n and frame k,

 P_n[k] = sum_t g_n[t - c_k] |y_n[t]|^2,  y_n[t] = sum_tau x[t + tau] phi_n[tau]

with phi_n the W-tap complex Gabor filter of Eq. 4 (`GaborConv1D`, as a
cross-correlation, 'SAME' padding), |.|^2 the squared modulus of Eq. 3 and g_n
the W-tap Gaussian pooling window of Eq. 5 (`GaussianLowpass`, stride s,
'SAME' padding, |y|^2 taken as zero outside the clip). The original release
computes this as a direct convolution of 2N real filters at the full sample
rate. This package has two other formulations of the same P, which read the
weights of the layers they replace (so that the parameters, their layout and
the output shape are those of the original):

- `fft_ops`: FFT lengths, 'SAME' padding arithmetic, complex ops with cheap
  gradients.
- `overlap_save`: P exactly, up to float32 rounding, by FFT (overlap-save
  blocks, then one batched matrix product for the pooling); also TD-
  filterbanks' free filters, and SincNet's real filters with LeakyReLU and
  max or Gaussian pooling.
- `plan`: the fast mode's `BandedPlan`, which bins and which reduced rate
  each channel gets, made from the weights.
- `banded`: the fast mode's computation following a plan: each channel
  filtered only over the bins where its response is not negligible, at a
  reduced rate, within 0.5% of the exact P (0.1% with the 'accuracy'
  tolerance).
- `engines`: the fused computations of the layer stacks that have one.
- `layer`: `FilterbankEnergies`, the Keras layer that owns the three layers
  and chooses how they are computed.

Only `layer` is imported here: it runs on every Keras backend; the other
modules are TensorFlow's and are imported where they are used.
"""

from leaf_audio.filterbank.layer import IMPLEMENTATIONS
from leaf_audio.filterbank.layer import check_implementation
from leaf_audio.filterbank.layer import XLA_MAX_SAMPLES
from leaf_audio.filterbank.layer import FilterbankEnergies
from leaf_audio.filterbank.layer import fused_engine
