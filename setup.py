"""Installs leaf_audio, the LEAF learnable audio frontends for Keras 3, and
the training program.

The repository's `example/` folder (the training program, as in the original
release) installs as the package `leaf_audio_example`, and `configs/` as its
package data `leaf_audio_example/configs/*.gin`, so that nothing installs a
generic top-level name. The program's modules import each other relatively,
so they run under either name.
"""

import setuptools

PROGRAM = 'leaf_audio_example'

setuptools.setup(
    name='leaf-audio',
    version='0.1.0',
    description=('LEAF: a learnable audio frontend (Gabor filtering, Gaussian '
                 'lowpass pooling, sPCEN) as Keras 3 layers.'),
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    packages=(setuptools.find_packages(include=['leaf_audio', 'leaf_audio.*'])
              + [PROGRAM, f'{PROGRAM}.configs']),
    package_dir={PROGRAM: 'example', f'{PROGRAM}.configs': 'configs'},
    # Configs in subfolders too (e.g. configs/ssl/*.gin).
    package_data={f'{PROGRAM}.configs': ['*.gin', '**/*.gin']},
    # keras 3.15 and numpy 2.4 need Python 3.11.
    python_requires='>=3.11',
    install_requires=[
        # The ranges the test suite has been run with.
        'tensorflow~=2.21.0',
        'keras~=3.15.0',
        'tensorflow-datasets>=4.9.10,<5',
        # tensorflow-datasets imports it but declares it only for Python < 3.9.
        'importlib_resources>=6',
        'gin-config~=0.5.0',
        'absl-py>=2.0',
        'numpy>=2.0,<3',
        # Audio files of local-folder datasets: decoding (libsndfile, bundled
        # in the wheel) and resampling to 16 kHz.
        'soundfile>=0.12',
        'soxr>=0.3.7',
        # The training logs: keras.callbacks.TensorBoard writes them with
        # tf.summary, which TensorFlow 2.21 takes from this package.
        'tensorboard>=2.20',
    ],
    extras_require={
        'dev': ['pytest>=8', 'pytest-xdist>=3'],
        # Running exported .tflite models (example/export_tflite.py checks
        # its conversions with it).
        'tflite': ['ai-edge-litert>=1.2'],
        # The figures of `python -m example.inspect`.
        'plots': ['matplotlib>=3.7'],
    },
    entry_points={
        'console_scripts': [
            f'leaf-audio-train={PROGRAM}.main:run',
            f'leaf-audio-export-tflite={PROGRAM}.export_tflite:run',
            f'leaf-audio-pretrain={PROGRAM}.pretrain:run',
            f'leaf-audio-inspect={PROGRAM}.inspect:run',
        ],
    },
    license='Apache-2.0',
)
