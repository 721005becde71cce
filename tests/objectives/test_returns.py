"""n-step multi-gamma targets against hand-computed values (terminals and padding mid-window and at the end)."""
import pytest
import torch

from torchrl_amago.objectives.returns import greedy_continues, nstep_return

GAM = torch.tensor([0.5, 0.9], dtype=torch.float64)
# 3 rows, T=5
R = torch.tensor([[1., 2., 3., 4., 5.],
                  [1., 2., 3., 4., 5.],
                  [1., 2., 3., 4., 5.]], dtype=torch.float64)
TERM = torch.tensor([[0, 1, 0, 0, 0],     # terminal mid-window
                     [0, 0, 0, 0, 1],     # terminal at the last step
                     [0, 0, 0, 0, 0]], dtype=torch.bool)
VALID = torch.tensor([[1, 1, 1, 1, 0],    # padding at the end
                      [1, 1, 0, 1, 1],    # invalid step in the middle
                      [1, 1, 1, 1, 1]], dtype=torch.bool)
# q[b, t, g] = value of s_{t+1}; distinct numbers per (b, t, g)
Q = (100 * torch.arange(3).view(3, 1, 1) + 10 * torch.arange(5).view(1, 5, 1)
     + torch.tensor([1., 2.]).view(1, 1, 2)).double()


def q(b, t, g):
    return float(Q[b, t, g])


def expected_n1(b, t, g):
    y = GAM[g].item()
    if not VALID[b, t]:
        return 0.0
    return R[b, t].item() + (0.0 if TERM[b, t] else y * q(b, t, g))


def expected_n3():
    out = torch.zeros(3, 5, 2, dtype=torch.float64)
    for g in range(2):
        y = GAM[g].item()
        # row 0: valid [1,1,1,1,0], term at t=1
        out[0, 0, g] = 1 + y * 2                       # stops at the terminal, no bootstrap
        out[0, 1, g] = 2
        out[0, 2, g] = 3 + y * 4 + y**2 * q(0, 3, g)   # step 4 is padding: bootstrap from s_4
        out[0, 3, g] = 4 + y * q(0, 3, g)
        out[0, 4, g] = 0
        # row 1: valid [1,1,0,1,1], term at t=4
        out[1, 0, g] = 1 + y * 2 + y**2 * q(1, 1, g)   # step 2 invalid
        out[1, 1, g] = 2 + y * q(1, 1, g)
        out[1, 2, g] = 0
        out[1, 3, g] = 4 + y * 5
        out[1, 4, g] = 5
        # row 2: all valid, no terminal
        out[2, 0, g] = 1 + y * 2 + y**2 * 3 + y**3 * q(2, 2, g)
        out[2, 1, g] = 2 + y * 3 + y**2 * 4 + y**3 * q(2, 3, g)
        out[2, 2, g] = 3 + y * 4 + y**2 * 5 + y**3 * q(2, 4, g)
        out[2, 3, g] = 4 + y * 5 + y**2 * q(2, 4, g)   # window ends: bootstrap from the last successor
        out[2, 4, g] = 5 + y * q(2, 4, g)
    return out


def test_n1_hand_computed():
    y = nstep_return(R, TERM, VALID, Q, GAM, n=1)
    exp = torch.tensor([[[expected_n1(b, t, g) for g in range(2)] for t in range(5)] for b in range(3)],
                       dtype=torch.float64)
    assert y.shape == (3, 5, 2)
    torch.testing.assert_close(y, exp)
    # spot check one number fully by hand: row 2, t=1, gamma .9 -> 2 + .9 * 212
    assert y[2, 1, 1].item() == pytest.approx(2 + 0.9 * 212)


def test_n3_hand_computed():
    y = nstep_return(R, TERM, VALID, Q, GAM, n=3)
    torch.testing.assert_close(y, expected_n3())
    assert y[0, 2, 0].item() == pytest.approx(3 + 0.5 * 4 + 0.25 * 31)


def test_reward_multiplier_and_trailing_dims():
    # [B, T, 1] inputs, reward multiplier, and an extra critic axis [B, T, C, G]
    qc = torch.stack([Q, 2 * Q], dim=2)
    y = nstep_return(R.unsqueeze(-1), TERM.unsqueeze(-1), VALID.unsqueeze(-1), qc, GAM, n=3, reward_multiplier=10.0)
    assert y.shape == (3, 5, 2, 2)
    # row 1, t=3: 10*4 + g*10*5 (terminal) is independent of q
    torch.testing.assert_close(y[1, 3, :, 1], torch.full((2,), 40 + 0.9 * 50, dtype=torch.float64))
    # row 2, t=4: 10*5 + g * q
    torch.testing.assert_close(y[2, 4, 1, :], 50 + GAM * 2 * Q[2, 4])


def _brute(r, term, valid, q, gam, n):
    B, T, G = q.shape
    out = torch.zeros_like(q)
    for b in range(B):
        for t in range(T):
            if not valid[b, t]:
                continue
            for g in range(G):
                acc, k = 0.0, t
                while True:
                    acc += gam[g] ** (k - t) * r[b, k]
                    if term[b, k]:
                        break
                    if k - t + 1 == n or k + 1 >= T or not valid[b, k + 1]:
                        acc += gam[g] ** (k - t + 1) * q[b, k, g]
                        break
                    k += 1
                out[b, t, g] = acc
    return out


@pytest.mark.parametrize("n", [1, 2, 4])
def test_random_against_brute_force(n):
    g = torch.Generator().manual_seed(n)
    B, T, G = 4, 9, 3
    r = torch.randn(B, T, generator=g, dtype=torch.float64)
    term = torch.rand(B, T, generator=g) < 0.2
    valid = torch.rand(B, T, generator=g) < 0.8
    q = torch.randn(B, T, G, generator=g, dtype=torch.float64)
    gam = torch.tensor([0.3, 0.9, 0.99], dtype=torch.float64)
    torch.testing.assert_close(nstep_return(r, term, valid, q, gam, n=n), _brute(r, term, valid, q, gam, n))


def test_padding_values_are_ignored():
    q2, r2 = Q.clone(), R.clone()
    q2[0, 4] = float("nan")
    r2[0, 4] = float("inf")
    r2[1, 2] = 1e9
    y = nstep_return(r2, TERM, VALID, q2, GAM, n=3)
    torch.testing.assert_close(y, expected_n3())


def test_bad_input():
    with pytest.raises(ValueError, match="n_step"):
        nstep_return(R, TERM, VALID, Q, GAM, n=0)
    with pytest.raises(ValueError, match="gammas"):
        nstep_return(R, TERM, VALID, Q, GAM[:1], n=1)
    with pytest.raises(ValueError, match="terminated"):
        nstep_return(R, TERM[:, :3], VALID, Q, GAM, n=1)


def test_continues_stops_a_return_before_the_cut_step_only():
    # row 2 (all valid, no terminal), 3-step returns; step 2's action is cut for gamma .5 only
    cont = torch.ones(3, 5, 2, dtype=torch.bool)
    cont[2, 2, 0] = False
    y = nstep_return(R, TERM, VALID, Q, GAM, n=3, continues=cont)
    full = expected_n3()
    g = 0.5
    assert y[2, 0, 0].item() == pytest.approx(1 + g * 2 + g**2 * q(2, 1, 0))  # bootstraps from s_2, before step 2
    assert y[2, 1, 0].item() == pytest.approx(2 + g * q(2, 1, 0))
    torch.testing.assert_close(y[2, 2:, 0], full[2, 2:, 0])  # returns that start at or after the cut: unchanged
    torch.testing.assert_close(y[..., 1], full[..., 1])  # the other gamma: unchanged
    torch.testing.assert_close(y[:2], full[:2])
    # cutting every step gives the 1-step targets; [B, T] masks broadcast over the gammas
    torch.testing.assert_close(nstep_return(R, TERM, VALID, Q, GAM, n=3, continues=torch.zeros(3, 5, dtype=torch.bool)),
                               nstep_return(R, TERM, VALID, Q, GAM, n=1))


def test_greedy_continues_stops_before_buffer_actions_below_the_cut():
    """Entry t - 1 of the target policy's probabilities at s_{t+1} is pi'(.|s_t): a return goes on through step t
    where pi'(a_t|s_t) >= cut * max_a pi'(a|s_t); step 0 never stops one (it is no intermediate step)."""
    probs = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.4, 0.4, 0.2], [1.0, 0.0, 0.0]])  # pi' at s_1..s_4
    probs = probs[None, :, None, :]  # [B=1, T=4, G=1, A=3]
    actions = torch.tensor([[2, 1, 0, 2]])  # a_0 .. a_3: a_1 = 1 (pi'(.|s_1) = probs[0]), a_2 = 0, a_3 = 2
    assert greedy_continues(probs, actions, 1.0)[0, :, 0].tolist() == [True, False, False, False]
    assert greedy_continues(probs, actions, 0.5)[0, :, 0].tolist() == [True, True, False, True]
    assert greedy_continues(probs, actions, 0.0).all()
