"""What the CPU and CUDA backends share: code generation (`codegen`), the generated-module
cache (`cache`) and the program's host side (`program`). Neither backend imports the
other."""
