"""Build the native chunker; everything else lives in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "modelstore._cdc",
            sources=["modelstore/_cdc.c"],
            extra_compile_args=["-O3", "-std=c99"],
        )
    ]
)
