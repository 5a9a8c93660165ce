"""Installs leaf_audio, the LEAF learnable audio frontends for Keras 3."""

import setuptools

setuptools.setup(
    name='leaf-audio',
    version='0.1.0',
    description=('LEAF: a learnable audio frontend (Gabor filtering, Gaussian '
                 'lowpass pooling, sPCEN) as Keras 3 layers.'),
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    packages=setuptools.find_packages(include=['leaf_audio', 'leaf_audio.*',
                                               'example', 'example.*']),
    python_requires='>=3.10',
    install_requires=[
        # The ranges the test suite has been run with.
        'tensorflow~=2.21.0',
        'keras~=3.15.0',
        'tensorflow-datasets>=4.9.10,<5',
        'gin-config~=0.5.0',
        'absl-py>=2.0',
        'numpy>=2.0,<3',
    ],
    extras_require={
        'dev': ['pytest>=8'],
        # Reading FLAC clips in local-folder datasets.
        'flac': ['soundfile>=0.12'],
    },
    license='Apache-2.0',
)
