"""SSIMULACRA2 (libjxl's perceptual score, 0-100, 90 = not told apart at normal viewing)
for `quality=auto`: NumPy arithmetic, libvips' separable convolution for the blurs (as
libvips operations throughout it took 5x longer on 400 px images: every operation is a
pipeline of its own).

It follows libjxl's `tools/ssimulacra2.cc`: linear RGB to XYB (made positive), six scales
(halved in linear RGB), per scale and XYB channel an SSIM map and an edge-difference map
(ringing/blocking where the encode has edges the reference lacks, blur where it lost
them), each pooled as a mean and a 4-norm, weighted and mapped to 0-100. Edges are
handled as libvips does (copied), not as libjxl does, which moves scores by a point or
three (tests/edge/transform/test_encode.py checks it against the `ssimulacra2` package).
Alpha is blended over mid-grey, as libjxl's default.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pyvips

Array = npt.NDArray[np.float32]

SCALES = 6
C2 = 0.0009
SIGMA = 1.5
# libjxl's kernel reaches 3.33 sigma: exp(-3.33^2 / 2) ~ 0.004 (libvips' default stops at 0.2)
MIN_AMPLITUDE = 0.004

_OPSIN = np.array(
    [
        [0.30, 0.622, 0.078],
        [0.23, 0.692, 0.078],
        [0.24342268924547819, 0.20476744424496821, 1 - 0.24342268924547819 - 0.20476744424496821],
    ],
    dtype=np.float32,
)
_BIAS = 0.0037930732552754493
_CBRT_BIAS = _BIAS ** (1 / 3)
# X = 14 * (m0 - m1) / 2 + 0.42; Y = (m0 + m1) / 2 + 0.01; B = m2 - Y' + 0.55 (libjxl's
# MakePositiveXYB), with the cube-root bias subtracted from each of m0, m1, m2 folded in
_POSITIVE = np.array([[7.0, -7.0, 0.0], [0.5, 0.5, 0.0], [-0.5, -0.5, 1.0]], dtype=np.float32)
_OFFSET = np.array([0.42, 0.01 - _CBRT_BIAS, 0.55], dtype=np.float32)
_KERNEL = pyvips.Image.gaussmat(SIGMA, MIN_AMPLITUDE, separable=True, precision="float")

_WEIGHTS = (
    0.0, 0.0007376606707406586, 0.0, 0.0, 0.0007793481682867309, 0.0, 0.0,
    0.0004371155730107379, 0.0, 1.1041726426657346, 0.00066284834129271,
    0.00015231632783718752, 0.0, 0.0016406437456599754, 0.0, 1.8422455520539298,
    11.441172603757666, 0.0, 0.0007989109436015163, 0.000176816438078653, 0.0,
    1.8787594979546387, 10.94906990605142, 0.0, 0.0007289346991508072, 0.9677937080626833,
    0.0, 0.00014003424285435884, 0.9981766977854967, 0.00031949755934435053,
    0.0004550992113792063, 0.0, 0.0, 0.0013648766163243398, 0.0, 0.0, 0.0, 0.0, 0.0,
    7.466890328078848, 0.0, 17.445833984131262, 0.0006235601634041466, 0.0, 0.0,
    6.683678146179332, 0.00037724407979611296, 1.027889937768264, 225.20515300849274, 0.0,
    0.0, 19.213238186143016, 0.0011401524586618361, 0.001237755635509985,
    176.39317598450694, 0.0, 0.0, 24.43300999870476, 0.28520802612117757,
    0.0004485436923833408, 0.0, 0.0, 0.0, 34.77906344483772, 44.835625328877896, 0.0, 0.0,
    0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0008680556573291698, 0.0, 0.0, 0.0, 0.0, 0.0,
    0.0005313191874358747, 0.0, 0.00016533814161379112, 0.0, 0.0, 0.0, 0.0, 0.0,
    0.0004179171803251336, 0.0017290828234722833, 0.0, 0.0020827005846636437, 0.0, 0.0,
    8.826982764996862, 23.19243343998926, 0.0, 95.1080498811086, 0.9863978034400682,
    0.9834382792465353, 0.0012286405048278493, 171.2667255897307, 0.9807858872435379, 0.0,
    0.0, 0.0, 0.0005130064588990679, 0.0, 0.00010854057858411537,
)  # fmt: skip


def ssimulacra2(reference: pyvips.Image, distorted: pyvips.Image) -> float:
    """The score of `distorted` (an encode, decoded) against `reference` (what was encoded):
    both 8-bit sRGB or grey, alpha or not, of the same size."""
    if (reference.width, reference.height) != (distorted.width, distorted.height):
        raise ValueError("images of different sizes")
    one, two = _linear(reference), _linear(distorted)
    planes: list[tuple[list[float], list[float]]] = []  # per scale: ssim (6), edges (12)
    for scale in range(SCALES):
        if scale:
            one, two = _halve(one), _halve(two)
        if one.shape[0] < 8 or one.shape[1] < 8:
            break
        planes.append(_compare(_xyb(one), _xyb(two)))
    return _pooled(planes)


def _linear(image: pyvips.Image) -> Array:
    if image.bands in (1, 2):
        image = image.colourspace("srgb")
    if image.hasalpha():
        image = image.flatten(background=[round(255 * 0.5 ** (1 / 2.2))] * 3)
    # libvips' sRGB curve (a table for 8-bit), to float linear RGB in 0-1
    return np.asarray(image.colourspace("scrgb").numpy(), dtype=np.float32)


def _halve(image: Array) -> Array:
    """2x2 box means in linear light; an odd last row or column is averaged alone (as
    libjxl rounds sizes up: a 250 px side makes 6 scales, 125, 63, 32, 16, 8, not 5)."""
    height, width = image.shape[0], image.shape[1]
    if height % 2 or width % 2:  # repeating the edge makes its means the partial ones
        image = np.pad(image, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")
    quads = image.reshape(image.shape[0] // 2, 2, image.shape[1] // 2, 2, 3)
    return np.asarray(quads.mean(axis=(1, 3), dtype=np.float32))


def _xyb(linear: Array) -> Array:
    mixed = np.cbrt(np.maximum(_mix(linear, _OPSIN) + _BIAS, 0.0))
    return np.asarray(_mix(mixed, _POSITIVE) + _OFFSET, dtype=np.float32)


def _mix(image: Array, matrix: Array) -> Array:
    """Each pixel's 3 bands times a 3x3 matrix, as broadcast products: a matrix product
    (`@`) would go to BLAS, whose threads spin on a worker's one core."""
    return np.asarray(
        image[:, :, 0:1] * matrix[:, 0]
        + image[:, :, 1:2] * matrix[:, 1]
        + image[:, :, 2:3] * matrix[:, 2]
    )


def _blur(planes: Array) -> Array:
    """libjxl's Gaussian (sigma 1.5) over every band: libvips' separable convolution."""
    image = pyvips.Image.new_from_array(np.ascontiguousarray(planes))
    return np.asarray(image.convsep(_KERNEL, precision="float").numpy())


def _compare(one: Array, two: Array) -> tuple[list[float], list[float]]:
    # one blur of 15 bands: both images, their squares and their product
    blurred = _blur(np.concatenate([one, two, one * one, two * two, one * two], axis=2))
    mu1, mu2, s11, s22, s12 = (blurred[:, :, 3 * i : 3 * i + 3] for i in range(5))
    num_m = 1.0 - (mu1 - mu2) ** 2
    num_s = 2.0 * (s12 - mu1 * mu2) + C2
    denom_s = (s11 - mu1 * mu1) + (s22 - mu2 * mu2) + C2
    ssim = np.maximum(1.0 - num_m * num_s / denom_s, 0.0)
    ratio = (1.0 + np.abs(two - mu2)) / (1.0 + np.abs(one - mu1)) - 1.0
    # 9 maps (ssim, ringing, blur; X Y B each) and their 4th powers, pooled as column
    # sums of one array (a mean over two axes of each map is several times slower)
    maps = np.concatenate([ssim, np.maximum(ratio, 0.0), np.maximum(-ratio, 0.0)], axis=2)
    square = maps * maps
    pixels = maps.shape[0] * maps.shape[1]
    both = np.concatenate([maps, square * square], axis=2).reshape(pixels, 18)
    means = (both.sum(axis=0, dtype=np.float64) / pixels).tolist()
    norms = [(means[i], max(0.0, means[9 + i]) ** 0.25) for i in range(9)]
    ssim_planes = [value for band in range(3) for value in norms[band]]
    edge_planes = [v for band in range(3) for v in (*norms[3 + band], *norms[6 + band])]
    return ssim_planes, edge_planes


def _pooled(planes: list[tuple[list[float], list[float]]]) -> float:
    total, i = 0.0, 0
    for channel in range(3):
        for ssim, edges in planes:
            for norm in range(2):
                total += _WEIGHTS[i] * abs(ssim[channel * 2 + norm])
                total += _WEIGHTS[i + 1] * abs(edges[channel * 4 + norm])
                total += _WEIGHTS[i + 2] * abs(edges[channel * 4 + norm + 2])
                i += 3
    total *= 0.9562382616834844
    total = (
        2.326765642916932 * total
        - 0.020884521182843837 * total**2
        + 6.248496625763138e-05 * total**3
    )
    return 100.0 - 10.0 * total**0.6276336467831387 if total > 0 else 100.0
