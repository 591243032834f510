"""The dtype a CPU engine runs in when its config says "auto"."""

from __future__ import annotations

import pytest

from synth.engines.vllm_local import cpu_dtype

AVX2 = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n\nprocessor\t: 1\nflags\t\t: fpu sse2 avx avx2 fma\n"
SAPPHIRE = "flags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
NEOVERSE = "Features\t: fp asimd evtstrm aes sve bf16 i8mm\n"
GRAVITON2 = "Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics\n"


@pytest.mark.parametrize(
    ("cpuinfo", "expected"),
    [
        (AVX2, "float32"),  # bfloat16 would be emulated: float32 decodes faster
        (GRAVITON2, "float32"),
        (SAPPHIRE, "auto"),  # the model's own dtype
        (NEOVERSE, "auto"),
        ("", "auto"),  # flags unknown: as vLLM would choose
        ("processor\t: 0\n", "auto"),
    ],
)
def test_auto_is_float32_only_on_a_cpu_known_to_lack_bfloat16(cpuinfo, expected):
    assert cpu_dtype("auto", cpuinfo) == expected


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32"])
def test_a_dtype_the_config_names_is_kept_on_any_cpu(dtype):
    assert cpu_dtype(dtype, AVX2) == dtype and cpu_dtype(dtype, SAPPHIRE) == dtype
