"""Integer arithmetic of the kernels' host code (grids, chunk counts, tile sizes), in plain Python.

triton.cdiv and triton.next_power_of_2 give the same values, but in Triton 3.8 they are constexpr functions whose
call from host code costs about 5 us each (a 2-core CPU); a GKA forward and backward made 15 such calls.
"""


def cdiv(a: int, b: int) -> int:
    """ceil(a / b) for a >= 0, b > 0."""
    return -(-a // b)


def next_power_of_2(n: int) -> int:
    """The smallest power of two >= n, for n >= 0 (0 for 0, as triton's)."""
    return 0 if n <= 0 else 1 << (n - 1).bit_length()
