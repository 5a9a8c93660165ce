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
        'tensorflow>=2.16,<2.22',
        'keras>=3.3,<3.16',
        'tensorflow-datasets>=4.9,<5',
        'gin-config>=0.5,<0.6',
        'absl-py>=1.0',
        'numpy>=1.26,<3',
    ],
    extras_require={'dev': ['pytest>=8']},
    license='Apache-2.0',
)
