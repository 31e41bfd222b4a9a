#!/usr/bin/python3
"""Reference values for nidag's diffusion tensor (DTI) fitting from DIPY.

Run with Debian's interpreter (python3-dipy 1.6.0, numpy 1.24, nibabel 5.0):

    OPENBLAS_NUM_THREADS=1 /usr/bin/python3 scripts/dti_reference.py

It writes, deterministically (numpy default_rng(42), one BLAS thread), the
files described in tests/data/dti/README.md (which it also writes). Every
.npy is np.save output, little-endian, C order, float64 ('<f8') or int64
('<i8'); masks are int64 0/1.

Cases:
  small64_*  DIPY's small_64D (10x10x10 voxels x 65 volumes, int16), read
             locally through dipy.data.get_fnames (no download), with the
             gradient table dipy builds from its .bval/.bvec.
  syn_*      a 2,000-voxel version of the peers' W6b workload: 5 b0 + 65
             directions at b=1000, S0=1000, Gaussian noise sd 20, clipped
             below at 1.0.
For each case, TensorModel(gtab, fit_method=m).fit(data) for m in WLS, OLS
(no mask, DIPY defaults, so the signal floor is MIN_POSITIVE_SIGNAL = 1e-4).

Notes on DIPY 1.6 that the C side must reproduce are in the README.
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import nibabel as nib
import dipy
import dipy.reconst.dti as dti
from dipy.core.gradients import gradient_table
from dipy.data import get_fnames
from dipy.io.gradients import read_bvals_bvecs

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.normpath(os.path.join(HERE, "..", "tests", "data", "dti"))

METHODS = ("WLS", "OLS")
N_SYN = 2000
# Eigenvectors are compared only where the eigenvalues are this far apart,
# relative to the largest (elsewhere they are ill-conditioned).
EVEC_GAP = 1e-3

_readme = []  # (file name, dtype, shape, description) in the order written
_extra = []   # (file name, description) for non-.npy files


def save(name, arr, what):
    arr = np.asarray(arr)
    if arr.dtype.kind in "iub":
        arr = np.ascontiguousarray(arr, dtype="<i8")
    else:
        arr = np.ascontiguousarray(arr, dtype="<f8")
    np.save(os.path.join(OUT, name + ".npy"), arr, allow_pickle=False)
    _readme.append((name + ".npy", arr.dtype.str, arr.shape, what))


def min_diffusivity(X):
    """The eigenvalue floor DIPY's WLS/OLS fits use: 1e-6 / -X.min()."""
    return 1e-6 / -X.min()


def coefficients(X, data, method):
    """The 7 regression coefficients of DIPY 1.6's fit, restated from
    dti.ols_fit_tensor / dti.wls_fit_tensor (checked against the fit)."""
    shape = data.shape[:-1]
    data = np.maximum(data.reshape(-1, data.shape[-1]), dti.MIN_POSITIVE_SIGNAL)
    y = np.log(data)
    ols = np.einsum("...ij,...j", np.linalg.pinv(X), y)
    if method == "OLS":
        return ols.reshape(shape + (7,))
    w = np.exp(ols @ X.T)
    wls = np.einsum("...ij,...j", np.linalg.pinv(X * w[..., None]), w * y)
    return wls.reshape(shape + (7,))


def well_defined(evals, evecs, mdiff):
    """1 where all 12 fit parameters and the FA are finite and no eigenvalue
    was floored (smallest eigenvalue > min_diffusivity)."""
    fa = dti.fractional_anisotropy(evals)
    ok = (np.isfinite(evals).all(-1) & np.isfinite(evecs).all((-1, -2))
          & np.isfinite(fa) & (evals[..., 2] > mdiff))
    return ok


def evec_ok(evals, wd):
    """1 where well defined and min(l1-l2, l2-l3) > EVEC_GAP * l1."""
    gap = np.minimum(evals[..., 0] - evals[..., 1], evals[..., 1] - evals[..., 2])
    return wd & (gap > EVEC_GAP * evals[..., 0])


def fit_case(prefix, gtab, data, shape_txt, lines):
    X = dti.design_matrix(gtab)
    mdiff = min_diffusivity(X)
    save(prefix + "_design", X,
         "dipy.reconst.dti.design_matrix(gtab): rows = volumes, columns "
         "-b*[gx^2, 2gxgy, gy^2, 2gxgz, 2gygz, gz^2] and -1")
    save(prefix + "_min_diffusivity", np.array([mdiff]),
         "eigenvalue floor 1e-6 / -design.min() used by WLS and OLS")
    for m in METHODS:
        ml = m.lower()
        fit = dti.TensorModel(gtab, fit_method=m).fit(data)
        evals, evecs = fit.evals, fit.evecs
        coef = coefficients(X, np.asarray(data, dtype=np.float64), m)
        # restated coefficients must give DIPY's parameters bit for bit
        params = dti.eig_from_lo_tri(coef, min_diffusivity=mdiff)
        dif = np.nanmax(np.abs(params - fit.model_params))
        assert np.array_equal(params, fit.model_params, equal_nan=True), (m, dif)
        raw = np.linalg.eigvalsh(dti.from_lower_triangular(coef))[..., ::-1]
        wd = well_defined(evals, evecs, mdiff)
        eo = evec_ok(evals, wd)
        save(f"{prefix}_{ml}_coef", coef,
             f"{m} regression coefficients [{shape_txt}, 7]: Dxx, Dxy, Dyy, "
             "Dxz, Dyz, Dzz, -log(S0)")
        if (raw[..., 2] <= mdiff).any():  # only informative when some are floored
            save(f"{prefix}_{ml}_evals_raw", raw,
                 f"{m} eigenvalues before flooring, descending [{shape_txt}, 3]")
        save(f"{prefix}_{ml}_evals", evals,
             f"{m} fit.evals [{shape_txt}, 3]: descending, floored at min_diffusivity")
        save(f"{prefix}_{ml}_evecs", evecs,
             f"{m} fit.evecs [{shape_txt}, row (x,y,z), column j]: column j is the "
             "unit eigenvector of evals[j]; sign arbitrary")
        save(f"{prefix}_{ml}_fa", fit.fa, f"{m} fit.fa [{shape_txt}]")
        save(f"{prefix}_{ml}_md", fit.md, f"{m} fit.md [{shape_txt}]")
        save(f"{prefix}_{ml}_ad", fit.ad, f"{m} fit.ad [{shape_txt}]")
        save(f"{prefix}_{ml}_rd", fit.rd, f"{m} fit.rd [{shape_txt}]")
        save(f"{prefix}_{ml}_well_defined", wd.astype(np.int64),
             f"{m} 0/1 [{shape_txt}]: fit finite and smallest eigenvalue > "
             "min_diffusivity (not floored)")
        save(f"{prefix}_{ml}_evec_ok", eo.astype(np.int64),
             f"{m} 0/1 [{shape_txt}]: well defined and eigenvalue gaps > "
             f"{EVEC_GAP:g} * evals[0] (compare evecs here, up to sign)")
        nfl = int((raw[..., 2] <= mdiff).sum())
        lines.append(
            f"{prefix} {m}: FA [{np.nanmin(fit.fa):.6g}, {np.nanmax(fit.fa):.6g}] "
            f"MD [{np.nanmin(fit.md):.6g}, {np.nanmax(fit.md):.6g}] "
            f"well defined {int(wd.sum())}/{wd.size} (floored {nfl}, "
            f"non-finite {int((~np.isfinite(fit.fa)).sum())}), "
            f"evec_ok {int(eo.sum())}; well-defined FA "
            f"[{fit.fa[wd].min():.6g}, {fit.fa[wd].max():.6g}] MD "
            f"[{fit.md[wd].min():.6g}, {fit.md[wd].max():.6g}]")


def small64(lines):
    fdata, fbval, fbvec = get_fnames("small_64D")
    img = nib.load(fdata)
    raw = np.asarray(img.dataobj)
    assert raw.dtype == np.int16
    data = img.get_fdata()  # float64, no scaling in this file
    assert np.array_equal(data, raw.astype(np.float64))
    bvals, bvecs = read_bvals_bvecs(fbval, fbvec)
    gtab = gradient_table(bvals, bvecs)

    save("small64_data", raw,
         "small_64D.nii voxel values (int16 widened to int64) [x, y, z, volume]")
    save("small64_affine", img.affine, "small_64D.nii affine (4x4)")
    save("small64_bvals", bvals, "read_bvals_bvecs b-values")
    save("small64_bvecs", bvecs,
         "read_bvals_bvecs b-vectors [volume, xyz]; row 0 is NaN in the file")
    save("small64_gtab_bvals", gtab.bvals, "gradient_table(bvals, bvecs).bvals")
    save("small64_gtab_bvecs", gtab.bvecs,
         "gtab.bvecs: NaN -> 0; rows not within 1e-2 of unit norm -> 0 "
         "(and their bval -> 0)")
    save("small64_gtab_b0s_mask", gtab.b0s_mask.astype(np.int64),
         "gtab.b0s_mask 0/1: bvals <= b0_threshold (50)")

    # FSL text files written from the arrays: .bval one row, .bvec 3 rows
    # (x, y, z) by 65 columns, numpy's default '%.18e' (round-trips exactly).
    np.savetxt(os.path.join(OUT, "small64.bval"), bvals[None, :])
    np.savetxt(os.path.join(OUT, "small64.bvec"), bvecs.T)
    b2, v2 = read_bvals_bvecs(os.path.join(OUT, "small64.bval"),
                              os.path.join(OUT, "small64.bvec"))
    assert np.array_equal(b2, bvals) and np.array_equal(v2, bvecs, equal_nan=True)
    _extra.append(("small64.bval", "FSL b-values: 1 line, 65 values "
                   "(np.savetxt '%.18e', space separated)"))
    _extra.append(("small64.bvec", "FSL b-vectors: 3 lines (x, y, z) of 65 values "
                   "('%.18e'; column 0 is 'nan nan nan', as in DIPY's file, "
                   "which stores them 65 x 3)"))

    nii = nib.Nifti1Image(raw, img.affine)
    nii.set_data_dtype(np.int16)
    nii.header.set_xyzt_units(*img.header.get_xyzt_units())
    nii.header.set_qform(img.affine, code=int(img.header["qform_code"]) or 1)
    nii.header.set_sform(img.affine, code=int(img.header["sform_code"]) or 1)
    path = os.path.join(OUT, "small64.nii.gz")
    nib.save(nii, path)
    back = nib.load(path)
    assert np.array_equal(np.asarray(back.dataobj), raw)
    assert np.asarray(back.dataobj).dtype == np.int16
    assert np.allclose(back.affine, img.affine, rtol=0, atol=1e-6)
    _extra.append(("small64.nii.gz", "NIfTI-1, int16, 10x10x10x65, the same "
                   "voxels and affine (qform/sform; affine float32 in the header)"))

    lines.append(f"small64: data {raw.shape} b-values "
                 f"{sorted(set(np.round(bvals).astype(int)))}, "
                 f"b0 volumes {int(gtab.b0s_mask.sum())}")
    fit_case("small64", gtab, data, "x, y, z", lines)


def synth(lines):
    rng = np.random.default_rng(42)
    dirs = rng.standard_normal((65, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    bvals = np.concatenate([np.zeros(5), np.full(65, 1000.0)])
    bvecs = np.concatenate([np.zeros((5, 3)), dirs])
    l1 = rng.uniform(1.2e-3, 2.0e-3, N_SYN)
    l2 = rng.uniform(0.2e-3, 0.6e-3, N_SYN)
    l3 = l2 * rng.uniform(0.5, 1.0, N_SYN)
    Q, R = np.linalg.qr(rng.standard_normal((N_SYN, 3, 3)))
    Q = Q * np.sign(np.diagonal(R, axis1=1, axis2=2))[:, None, :]
    lam = np.stack([l1, l2, l3], axis=1)
    D = np.einsum("nij,nj,nkj->nik", Q, lam, Q)
    gDg = np.einsum("gi,nij,gj->ng", bvecs, D, bvecs)
    noise = rng.normal(0.0, 20.0, (N_SYN, 70))
    S = np.maximum(1000.0 * np.exp(-bvals[None, :] * gDg) + noise, 1.0)
    gtab = gradient_table(bvals, bvecs)

    save("syn_data", S, "synthetic signal [voxel, volume] (2000 x 70)")
    save("syn_bvals", bvals, "b-values: 5 x 0 then 65 x 1000")
    save("syn_bvecs", bvecs, "b-vectors [volume, xyz]: 5 zero rows then 65 unit vectors")
    save("syn_gtab_b0s_mask", gtab.b0s_mask.astype(np.int64), "gtab.b0s_mask 0/1")
    save("syn_true_fa", dti.fractional_anisotropy(lam), "true FA per voxel")
    lines.append(f"syn: data {S.shape}, {int((S <= 1.0).sum())} values clipped to 1.0")
    fit_case("syn", gtab, S, "voxel", lines)


def write_readme():
    with open(os.path.join(OUT, "README.md"), "w") as f:
        f.write(f"""# tests/data/dti

Reference inputs and outputs for nidag's diffusion tensor fitting, written by
`scripts/dti_reference.py` (DIPY {dipy.__version__}, numpy {np.__version__},
nibabel {nib.__version__}; run it with
`OPENBLAS_NUM_THREADS=1 /usr/bin/python3 scripts/dti_reference.py`). Do not edit
by hand: rerun the script. Every `.npy` file is `np.save` output, little-endian,
C order: `<f8` (float64) or `<i8` (int64; masks are 0/1). Shapes are numpy's
(row-major, first index slowest).

Cases: `small64_*` is DIPY's `small_64D` (`get_fnames('small_64D')`, 10x10x10
voxels x 65 volumes, int16; bvals/bvecs by `dipy.io.gradients.read_bvals_bvecs`,
`gradient_table(bvals, bvecs)` with the defaults b0_threshold=50, atol=1e-2);
`syn_*` is a 2,000-voxel version of the peers' W6b (default_rng(42): 65 unit
directions from standard normals, then l1 ~ U(1.2e-3, 2e-3), l2 ~ U(2e-4, 6e-4),
l3 = l2 * U(0.5, 1), rotation from QR of a standard-normal 3x3 with the signs
of diag(R), S = 1000 exp(-b g'Dg) + N(0, 20^2), clipped below at 1.0).
Both are fitted with `TensorModel(gtab, fit_method=m).fit(data)`, m in WLS, OLS,
no mask, DIPY defaults.

What DIPY 1.6 does (`dipy/reconst/dti.py`, `dipy/core/gradients.py`):

* Gradient table: NaN in bvecs -> 0; a row whose norm is not within 1e-2 of 1
  has its bvec set to 0 and its bval multiplied by 0; `gtab.bvecs` is then
  the given vector (not renormalised); `b0s_mask` = bvals <= 50.
* Design matrix X (volumes x 7): columns
  `-b gx^2, -2b gx gy, -b gy^2, -2b gx gz, -2b gy gz, -b gz^2, -1` (the
  docstring's order Bxx, Byy, Bzz, ... is wrong); coefficients
  `beta = (Dxx, Dxy, Dyy, Dxz, Dyz, Dzz, -log S0)`, model `log S = X beta`.
* Signal floor: `S = max(S, 1e-4)` (MIN_POSITIVE_SIGNAL; no `min_signal`
  given), then `y = log S`.
* OLS: `beta = pinv(X) y` (numpy pinv: SVD, rcond 1e-15).
* WLS: `w = exp(X beta_OLS)` (the OLS-predicted signal, not squared), then
  `beta = pinv(diag(w) X) (w * y)`, i.e. minimise sum_i w_i^2 (x_i beta - y_i)^2
  (weights S_hat^2). One pass, no iteration.
* Tensor `D = [[Dxx, Dxy, Dxz], [Dxy, Dyy, Dyz], [Dxz, Dyz, Dzz]]`,
  `np.linalg.eigh` (LAPACK syevd, lower triangle), sorted descending with
  argsort, THEN eigenvalues clipped below at `min_diffusivity = 1e-6 / -X.min()`
  (`*_min_diffusivity.npy`; X.min() is the most negative design entry, so
  1e-9 when b=1000 dominates). Eigenvectors are not changed by the clip;
  `evecs[..., :, j]` belongs to `evals[..., j]`.
* FA = sqrt(0.5 ((l1-l2)^2 + (l2-l3)^2 + (l3-l1)^2) / (l1^2 + l2^2 + l3^2 + z)),
  z = 1 if all three are 0 else 0; MD = (l1+l2+l3)/3 (as trace/3); AD = l1;
  RD = (l2+l3)/2; all from the floored eigenvalues.

Comparison rule: `*_well_defined` is 1 where every fitted parameter and the FA
are finite and the smallest eigenvalue is strictly above `min_diffusivity`
(not floored). Floored voxels are still reproducible (the clip is exact), but
their FA depends on which side of the floor a tiny raw eigenvalue fell.
`*_evec_ok` further requires min(l1-l2, l2-l3) > {EVEC_GAP:g} l1; compare
eigenvectors only there and only up to sign (per column).
`*_evals_raw` (written only where some voxel was floored) are the eigenvalues
before the clip. `*_coef` are the regression coefficients, restated from DIPY's code; the
script checks that they give DIPY's evals/evecs bit for bit.

| file | dtype | shape | contents |
|---|---|---|---|
""")
        for name, dt, shape, what in _readme:
            f.write(f"| `{name}` | `{dt}` | {tuple(shape)} | {what} |\n")
        f.write("\nOther files:\n\n")
        for name, what in _extra:
            f.write(f"* `{name}`: {what}\n")


def main():
    os.makedirs(OUT, exist_ok=True)
    lines = []
    small64(lines)
    synth(lines)
    write_readme()
    print(f"# dipy {dipy.__version__} numpy {np.__version__} nibabel {nib.__version__}")
    for s in lines:
        print(s)
    total = sum(os.path.getsize(os.path.join(OUT, n)) for n in os.listdir(OUT))
    print(f"# wrote {len(os.listdir(OUT))} files, {total} bytes, to {OUT}")


if __name__ == "__main__":
    main()
