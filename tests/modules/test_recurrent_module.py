"""TrajectoryEncoderModule as a TorchRL recurrent module: step mode with the state in TensorDict entries (primer on
the env, next state under "next", cleared at is_init) equals sequence mode on the same inputs; the mode follows
`set_recurrent_mode` / `default_recurrent_mode` as TorchRL's LSTMModule; a Transformer step costs O(cache)."""
from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule, TensorDictSequential
from torch.utils.flop_counter import FlopCounterMode
from torchrl.modules import set_recurrent_mode
from torchrl.modules.utils import get_primers_from_module

from torchrl_amago.envs import TMaze, make_amago_env
from torchrl_amago.modules import MLPTimestepEncoder, TrajectoryEncoderModule
from torchrl_amago.modules.trajectory import (FFTrajEncoder, GRUTrajEncoder, LSTMTrajEncoder, TrajectoryEncoder,
                                              TransformerTrajEncoder)

D_IN = 6


def _transformer(max_seq_len=32, pos_emb="fixed", n_layers=2):
    return TransformerTrajEncoder(D_IN, max_seq_len, d_model=16, n_heads=2, d_ff=32, n_layers=n_layers,
                                  pos_emb=pos_emb)


ENCODERS = {
    "tf_fixed": _transformer,
    "tf_rope": lambda: _transformer(pos_emb="rope"),
    "tf_rolling": lambda: _transformer(max_seq_len=4),  # the cache rolls: sequence mode needs window=4
    "gru": lambda: GRUTrajEncoder(D_IN, 32, d_hidden=12, n_layers=2, d_output=16),
    "lstm": lambda: LSTMTrajEncoder(D_IN, 32, d_hidden=12, n_layers=2, d_output=16),
    "ff": lambda: FFTrajEncoder(D_IN, 32, d_model=16),
}


def _trials(n, steps, seed):
    """tstep_emb [N, T, D], is_init [N, T, 1] (True at t=0 and at random resets), time_idx counting from each reset."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, steps, D_IN, generator=gen)
    is_init = torch.rand(n, steps, generator=gen) < 0.2
    is_init[:, 0] = True
    t = torch.zeros(n, steps, dtype=torch.long)
    for i in range(1, steps):
        t[:, i] = torch.where(is_init[:, i], 0, t[:, i - 1] + 1)
    return TensorDict({"tstep_emb": x, "is_init": is_init.unsqueeze(-1), "time_idx": t.unsqueeze(-1)}, [n, steps])


def _step_through(mod, seq):
    """Step mode over seq [N, T] the way a rollout does: the state written under "next" is read back at the next
    step (env.step_mdp); the first step has a primer's zeros."""
    n, steps = seq.batch_size
    state = mod.make_tensordict_primer().primers.zero().expand(n) if mod.state_keys else TensorDict({}, [n])
    outs, stored = [], []
    for i in range(steps):
        td = seq[:, i].clone().update(state.clone())
        td = mod(td)
        outs.append(td["state_emb"])
        stored.append(td)
        state = td["next"].select(*mod.state_keys) if mod.state_keys else TensorDict({}, [n])
    return torch.stack(outs, 1), torch.stack(stored, 1)


def _segments(row):
    starts = row.nonzero().squeeze(-1).tolist() + [len(row)]
    return list(zip(starts[:-1], starts[1:]))


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_step_mode_with_tensordict_state_equals_sequence_mode(name):
    torch.manual_seed(0)
    enc = ENCODERS[name]().eval()
    mod = TrajectoryEncoderModule(enc)
    seq = _trials(3, 20, seed=1)
    assert seq["is_init"][:, 1:].sum() >= 3  # several trials start inside the rows
    with torch.no_grad():
        stepped, stored = _step_through(mod, seq)
        window = {"window": 4} if name == "tf_rolling" else {}
        for b in range(3):  # reference: the encoder's own sequence mode on each trial alone
            for s, e in _segments(seq["is_init"][b, :, 0]):
                ref = enc(seq["tstep_emb"][b:b + 1, s:e], seq["time_idx"][b:b + 1, s:e, 0], **window)[0]
                torch.testing.assert_close(stepped[b, s:e], ref, atol=1e-5, rtol=0)
        if name != "tf_rolling":  # sequence mode keeps the trials of a row apart (segments, or a row per trial)
            with set_recurrent_mode(True):
                torch.testing.assert_close(mod(seq.clone())["state_emb"], stepped, atol=1e-5, rtol=0)
    # the state really is TensorDict entries: the root holds the state before the step, "next" the state after
    for key in mod.state_keys:
        torch.testing.assert_close(stored[:, 1:][key], stored[:, :-1]["next", key])
    if name == "tf_fixed":
        length = stored["next", "recurrent_state_length"][..., 0]
        torch.testing.assert_close(length, seq["time_idx"][..., 0] + 1)  # cleared at every is_init


def test_rnn_sequence_mode_restarts_its_memory_at_a_trial_start_inside_a_row():
    """An encoder that cannot keep trials of one row apart (packable=False) runs each trial as its own row."""
    enc = ENCODERS["gru"]()
    mod = TrajectoryEncoderModule(enc, default_recurrent_mode=True)
    seq = _trials(2, 12, seed=3)
    assert seq["is_init"][:, 1:].any()
    out = mod(seq.clone())["state_emb"]
    for b in range(2):
        for s, e in _segments(seq["is_init"][b, :, 0]):
            ref = enc(seq["tstep_emb"][b:b + 1, s:e], seq["time_idx"][b:b + 1, s:e, 0])[0]
            torch.testing.assert_close(out[b, s:e], ref, atol=1e-6, rtol=0)
    seq["is_init"][:, 1:] = False  # one trial per row: one pass over the whole row
    torch.testing.assert_close(mod(seq.clone())["state_emb"], enc(seq["tstep_emb"], seq["time_idx"][..., 0]))


def test_mode_follows_set_recurrent_mode_like_lstm_module():
    mod = TrajectoryEncoderModule(_transformer())
    assert mod.recurrent_mode is False  # TorchRL's default: step mode
    with set_recurrent_mode(True):
        assert mod.recurrent_mode is True
    with set_recurrent_mode("sequential"):
        assert TrajectoryEncoderModule(_transformer(), default_recurrent_mode=True).recurrent_mode is False
    assert TrajectoryEncoderModule(_transformer(), default_recurrent_mode=True).recurrent_mode is True
    with pytest.raises(RuntimeError, match="set_recurrent_mode"):
        mod.recurrent_mode = True
    # a [B, T] window sent to step mode without state entries: the error names the fix
    with pytest.raises(KeyError, match="set_recurrent_mode"):
        mod(_trials(2, 5, seed=0))


def test_primer_on_a_collector_env_and_rollout_matches_sequence_mode():
    """The TorchRL pipeline: tstep encoder -> memory (step mode) in a TensorDictSequential, the primer found by
    TorchRL's get_primers_from_module, one env.rollout across trial boundaries; the sequence-mode pass over the
    same rollout gives the acting embeddings."""
    torch.manual_seed(0)
    env = make_amago_env(TMaze(3, corridor_length=2, seed=0))  # trials of 3 steps
    tstep = MLPTimestepEncoder.from_specs(env.observation_spec, env.action_spec, d_hidden=16, d_output=D_IN)
    mem = TrajectoryEncoderModule(_transformer())
    head = TensorDictModule(torch.nn.Linear(16, 4), in_keys=["state_emb"], out_keys=["action_value"])
    pick = TensorDictModule(lambda q: torch.nn.functional.one_hot(q.argmax(-1), 4), in_keys=["action_value"],
                            out_keys=["action"])
    policy = TensorDictSequential(tstep, mem, head, pick).eval()
    primer = get_primers_from_module(policy)
    env.append_transform(primer)
    assert set(mem.state_keys) <= set(env.reset().keys())
    with torch.no_grad():
        data = env.rollout(8, policy, break_when_any_done=False)
        assert data["is_init"][:, 1:].any()
        with set_recurrent_mode(True):
            seq = mem(tstep(data.clone().exclude("state_emb")))["state_emb"]
    torch.testing.assert_close(seq, data["state_emb"], atol=1e-5, rtol=0)
    assert (data["next", "recurrent_state_length"][..., 0] == data["time_idx"][..., 0] + 1).all()


def test_transformer_step_cost_grows_linearly_with_the_cache(monkeypatch):
    """One step at cache fill c = 8, 16, 32, 64 (counted, not timed): the matmul FLOPs of everything but attention
    do not depend on c (the window is not re-run: one token per env goes through the layers), and every attention
    call reads exactly c keys per env (attention over the cache): the step costs a + b c."""
    torch.manual_seed(0)
    mod = TrajectoryEncoderModule(_transformer(max_seq_len=64)).eval()
    sdpa, key_lengths = torch.nn.functional.scaled_dot_product_attention, []

    def counting_sdpa(q, k, v, attn_mask=None, **kw):
        valid = (attn_mask == 0).sum(-1) if attn_mask is not None else torch.full(q.shape[:-1], k.shape[-2])
        key_lengths.append((q.shape[-2], valid.flatten().tolist()))
        return sdpa(q, k, v, attn_mask=attn_mask, **kw)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", counting_sdpa)
    flops = []
    for c in (8, 16, 32, 64):
        state = mod.make_tensordict_primer().primers.zero().expand(2).clone()
        state["recurrent_state_length"] = torch.full((2, 1), c - 1)  # c - 1 cached tokens + this one
        td = TensorDict({"tstep_emb": torch.randn(2, D_IN), "time_idx": torch.full((2, 1), c - 1),
                         "is_init": torch.zeros(2, 1, dtype=torch.bool)}, [2]).update(state)
        key_lengths.clear()
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            mod(td)
        flops.append(sum(n for op, n in counter.get_flop_counts()["Global"].items() if "attention" not in str(op)))
        assert key_lengths == [(1, [c, c])] * 2, (c, key_lengths)  # 2 layers, one query per env, c keys each
    assert len(set(flops)) == 1 and flops[0] > 0, flops


def test_encoder_without_a_tensor_state_says_what_to_implement():
    class Counter(TrajectoryEncoder):
        emb_dim = 1

        def forward(self, x, time_idx):
            return time_idx.unsqueeze(-1).float()

        def init_state(self, batch_size, device=None):
            return torch.zeros(batch_size)

    mod = TrajectoryEncoderModule(Counter(2, 4), default_recurrent_mode=True)  # sequence mode needs no state
    td = TensorDict({"tstep_emb": torch.zeros(1, 3, 2), "time_idx": torch.arange(3).reshape(1, 3, 1)}, [1, 3])
    assert mod(td)["state_emb"].flatten().tolist() == [0.0, 1.0, 2.0]
    with pytest.raises(NotImplementedError, match="state_to_tensors"):
        mod.make_tensordict_primer()
    with set_recurrent_mode(False), pytest.raises(NotImplementedError, match="state_from_tensors"):
        mod(td[:, 0])
    assert TrajectoryEncoderModule(FFTrajEncoder(D_IN, 4)).state_keys == []  # memory-free: no state entries
