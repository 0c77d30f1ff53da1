#!/usr/bin/env python3
"""The algebra of the chunked wkv7 kernels (kernels/cuda/cuda_wkv7_chunked.cuh), step for step in float64 numpy,
against the token recurrence of kernels.h differentiated by PyTorch autograd (float64).

The kernels compute a chunk of 16 tokens from its start state S0 through scaled rows (decay products relative to
the chunk's middle row, its start and its end), four masked Gram matrices, a unit-lower-triangular solve for the
rows u_t = S_{t-1} a_t, and the products for Y and the end state; the backward back-propagates through exactly those
products (the formulas at the top of the .cuh), with exponent gradients summed per key by a reverse cumulative sum.
This test runs that sequence of operations, padded last chunk included, and requires y, the final state and every
gradient (r, logw, k, v, a, b, the initial state) to match autograd of the recurrence to 1e-12 relative to each
quantity's largest element, for decays from gentle to e^-10 per token. It also checks the property the kernel relies
on to skip a term: the reference row's exponent gradient sums to zero.

The kernel itself is checked against the CPU backend on the host emulation (tests/gpu/wkv_cuda_logic_check.cpp) and
on a GPU (tests/gpu/gpu_ops_check.c); this test pins the formulas both implement to an independent derivation."""
import sys

import numpy as np
import torch

C = 16        # tokens per chunk
MID = C // 2 - 1  # the reference row
TOL = 1e-12


def recurrence(r, lw, k, v, a, b, s0):
    """kernels.h: sa = S a; S <- S diag(exp(logw)) + sa b^T + v k^T; y = S r (S[i][j]: i value, j key)."""
    s, ys = s0.clone(), []
    for t in range(r.shape[0]):
        sa = s @ a[t]
        s = s * torch.exp(lw[t])[None, :] + torch.outer(sa, b[t]) + torch.outer(v[t], k[t])
        ys.append(s @ r[t])
    return torch.stack(ys), s


def scaled_rows(r, lw, k, a, b):
    g = np.cumsum(lw, 0)                                   # G_t, inclusive
    gx = np.vstack([np.zeros((1, lw.shape[1])), g[:-1]])   # G_{t-1}
    gm, gl = g[MID], g[-1]
    return dict(G=g, Gx=gx, Gm=gm, GL=gl,
                q=r * np.exp(g - gm), ah=a * np.exp(gx - gm), kh=k * np.exp(gm - g), bh=b * np.exp(gm - g),
                q0=r * np.exp(g), a0=a * np.exp(gx), kL=k * np.exp(gl - g), bL=b * np.exp(gl - g))


def chunk_forward(s0, r, lw, k, v, a, b):
    c = scaled_rows(r, lw, k, a, b)
    c['Aqk'] = np.tril(c['q'] @ c['kh'].T)
    c['Aqb'] = np.tril(c['q'] @ c['bh'].T)
    c['Aak'] = np.tril(c['ah'] @ c['kh'].T, -1)
    c['Aab'] = np.tril(c['ah'] @ c['bh'].T, -1)
    c['M'] = np.eye(C) - c['Aab']
    u = np.linalg.solve(c['M'], c['a0'] @ s0.T + c['Aak'] @ v)
    y = c['q0'] @ s0.T + c['Aqk'] @ v + c['Aqb'] @ u
    s_end = s0 * np.exp(c['GL'])[None, :] + v.T @ c['kL'] + u.T @ c['bL']
    c['U'] = u
    return y, s_end, c


def chunk_backward(s0, r, lw, k, v, a, b, dy, ds):
    _, _, c = chunk_forward(s0, r, lw, k, v, a, b)
    u = c['U']
    eL = (ds * s0).sum(0) * np.exp(c['GL'])
    dv = c['kL'] @ ds.T + c['Aqk'].T @ dy
    dkL, dbL, dq0 = v @ ds, u @ ds, dy @ s0
    du = c['bL'] @ ds.T + c['Aqb'].T @ dy
    dr_ = np.linalg.solve(c['M'].T, du)                    # dR = (I - Aab)^-T dU
    da0 = dr_ @ s0
    dv += c['Aak'].T @ dr_
    dAqk, dAqb = np.tril(dy @ v.T), np.tril(dy @ u.T)
    dAak, dAab = np.tril(dr_ @ v.T, -1), np.tril(dr_ @ u.T, -1)
    ds0 = ds * np.exp(c['GL'])[None, :] + dy.T @ c['q0'] + dr_.T @ c['a0']
    dq = dAqk @ c['kh'] + dAqb @ c['bh']
    dkh = dAqk.T @ c['q'] + dAak.T @ c['ah']
    dbh = dAqb.T @ c['q'] + dAab.T @ c['ah']
    dah = dAak @ c['kh'] + dAab @ c['bh']
    g, gx, gm, gl = c['G'], c['Gx'], c['Gm'], c['GL']
    grads = dict(r=dq * np.exp(g - gm) + dq0 * np.exp(g), a=dah * np.exp(gx - gm) + da0 * np.exp(gx),
                 k=dkh * np.exp(gm - g) + dkL * np.exp(gl - g), b=dbh * np.exp(gm - g) + dbL * np.exp(gl - g), v=dv)
    xq, xq0, xa, xa0 = dq * c['q'], dq0 * c['q0'], dah * c['ah'], da0 * c['a0']
    xk, xb, xkL, xbL = dkh * c['kh'], dbh * c['bh'], dkL * c['kL'], dbL * c['bL']
    mid_term = (xk + xb - xq - xa).sum(0)                  # the reference row's exponent gradient: zero
    e = xq + xq0 - xk - xb - xkL - xbL                     # at G_t
    e[:-1] += (xa + xa0)[1:]                               # at G_{t-1}
    e[-1] += eL + (xkL + xbL).sum(0)                       # at G_L
    grads['lw'] = np.cumsum(e[::-1], 0)[::-1]              # dlogw_s = sum over t >= s
    return grads, ds0, np.abs(mid_term).max() / max(np.abs(xk).max(), 1e-300)


def run_case(seed, T, N, lw_lo, lw_hi):
    rng = np.random.default_rng(seed)
    ks = 1 / np.sqrt(N)

    def rand(lo, hi, shape):
        return torch.tensor(rng.uniform(lo, hi, shape), dtype=torch.float64, requires_grad=True)
    r, lw, k, v = rand(-1, 1, (T, N)), rand(lw_lo, lw_hi, (T, N)), rand(-ks, ks, (T, N)), rand(-1, 1, (T, N))
    kk = rng.uniform(-1, 1, (T, N))
    kk /= np.linalg.norm(kk, axis=1, keepdims=True)
    alpha = rng.uniform(0, 1, (T, N))                      # the model's a = -kappa, b = kappa * alpha
    a = torch.tensor(-kk, requires_grad=True)
    b = torch.tensor(kk * alpha, requires_grad=True)
    s0 = rand(-0.5, 0.5, (N, N))
    dy = torch.tensor(rng.uniform(-1, 1, (T, N)))
    ds_end = torch.tensor(rng.uniform(-0.5, 0.5, (N, N)))
    y_ref, s_ref = recurrence(r, lw, k, v, a, b, s0)
    ((y_ref * dy).sum() + (s_ref * ds_end).sum()).backward()

    R, LW, K, V, A, B = (x.detach().numpy() for x in (r, lw, k, v, a, b))
    pad = (-T) % C                                         # the kernel's padding: logw 0, zero vectors
    R, K, V, A, B, DY = (np.vstack([x, np.zeros((pad, N))]) for x in (R, K, V, A, B, dy.numpy()))
    LW = np.vstack([LW, np.zeros((pad, N))])
    s, ys, starts = s0.detach().numpy().copy(), [], []
    for c0 in range(0, T + pad, C):
        sl = slice(c0, c0 + C)
        starts.append(s.copy())
        y, s, _ = chunk_forward(s, R[sl], LW[sl], K[sl], V[sl], A[sl], B[sl])
        ys.append(y)
    errs = {'y': (np.vstack(ys)[:T], y_ref.detach().numpy()), 'state_out': (s, s_ref.detach().numpy())}
    grads = {n: np.zeros((T + pad, N)) for n in ('r', 'lw', 'k', 'v', 'a', 'b')}
    ds, worst_mid = ds_end.numpy().copy(), 0.0
    for ci in reversed(range(len(starts))):
        sl = slice(ci * C, ci * C + C)
        g, ds, mid = chunk_backward(starts[ci], R[sl], LW[sl], K[sl], V[sl], A[sl], B[sl], DY[sl], ds)
        worst_mid = max(worst_mid, mid)
        for n in g:
            grads[n][sl] += g[n]
    for n, x in zip(('r', 'lw', 'k', 'v', 'a', 'b'), (r, lw, k, v, a, b)):
        errs['d' + n] = (grads[n][:T], x.grad.numpy())
    errs['dstate_in'] = (ds, s0.grad.numpy())
    worst = 0.0
    line = f'T={T} N={N} logw in [{lw_lo}, {lw_hi}]:'
    for n, (got, ref) in errs.items():
        e = np.abs(got - ref).max() / np.abs(ref).max()
        worst = max(worst, e)
        line += f' {n} {e:.1e}'
    line += f' reference-row term {worst_mid:.1e}'
    ok = worst < TOL and worst_mid < TOL and np.all(np.isfinite(grads['lw']))
    print(line, 'ok' if ok else 'FAIL')
    return ok


def main():
    cases = [(1, 40, 8, -0.6, -0.01),    # RAD-RWKV7's decay range, a partial last chunk
             (2, 16, 6, -0.6065, -0.6),   # one whole chunk at the decay floor
             (3, 5, 8, -0.6, -0.01),      # shorter than a chunk
             (4, 50, 8, -10.0, -0.01),    # the kernel's documented limit
             (5, 33, 16, -3.0, -1.0)]
    ok = all([run_case(*c) for c in cases])
    print('all cases ok' if ok else 'FAILED')
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
