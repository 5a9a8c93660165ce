"""leaf_audio: LEAF and other learnable audio frontends as Keras 3 layers.

Importing the package registers every layer with gin and with Keras
serialization.
"""

from leaf_audio import callbacks
from leaf_audio import convolution
from leaf_audio import filterbank
from leaf_audio import frontend
from leaf_audio import gabor
from leaf_audio import impulse_responses
from leaf_audio import initializers
from leaf_audio import melfilters
from leaf_audio import models
from leaf_audio import pooling
from leaf_audio import postprocessing
from leaf_audio import utils

__version__ = '0.1.0'
