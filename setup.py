"""Build the native chunker and byte-plane mover; everything else lives in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "modelstore._cdc",
            sources=["modelstore/_cdc.c"],
            extra_compile_args=["-O3", "-std=c99"],
        ),
        Extension(
            "modelstore._planes",
            sources=["modelstore/_planes.c"],
            extra_compile_args=["-O3", "-std=gnu99"],
            libraries=["dl"],
        ),
    ]
)
