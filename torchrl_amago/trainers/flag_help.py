"""The help text of every `TrainConfig` field: one line each, shown by every example's `--help` (with the field's
default and, where it takes a name, its choices: `trainers/cli.py` adds both). A test checks that every field has one.
"""
from __future__ import annotations

FIELD_HELP = {
    # run / io
    "run_name": "name of the run (folder under --buffer_dir)",
    "buffer_dir": "root folder for runs: <buffer_dir>/<run_name>/{buffer,ckpts,logs}",
    "seed": "seed of torch (all weight initialisation, the timestep encoder included), the replay and the envs",
    "device": "learner device, e.g. cpu or cuda (checked before any work: cuda without CUDA is an error)",
    "dist_timeout_s": "torchrun: seconds a rank waits on the others (a dead or hung rank) before it stops with an "
                      "error (docs/scaling.md)",
    "log_to_wandb": "also log metrics to Weights & Biases (pip install wandb)",
    "wandb_project": "Weights & Biases project name",
    "progress_bar": "show a progress bar per epoch",
    # schedule
    "epochs": "training epochs (collect, update, eval, checkpoint)",
    "timesteps_per_epoch": "env steps per parallel env per epoch",
    "grads_per_epoch": "gradient updates per epoch (the original's --batches_per_epoch)",
    "start_learning_at_epoch": "first epoch with gradient updates",
    "start_collecting_at_epoch": "first epoch that collects env data (later: learn from offline data only)",
    "eval_interval": "evaluate every this many epochs (0: never)",
    "eval_timesteps": "env steps per eval env per evaluation",
    "eval_envs": "number of batched eval envs",
    "ckpt_interval": "keep a checkpoint every this many epochs (0: only the latest one, which is always written)",
    "keep_best": "write the weights of the best periodic eval so far (eval/success where the example has a success "
                 "threshold, else eval/return; a tie goes to the later eval) to <run>/ckpts/best.pt",
    "final_eval": "weights of the final evaluation: last (the run's last weights), best (ckpts/best.pt, the best "
                  "periodic eval's) or both (last, then best)",
    "own_eval_rng": "run every eval on its own random streams (seeded from --seed and the update count), so that "
                    "the eval settings do not change what the run trains on",
    "branch_every": "copy the checkpoint, replay and metrics to <run>/branches/epoch_<E>/ every this many epochs "
                    "(0: never), to start other runs from there with --branch_from (benchmarks/branch_run.py)",
    "branch_from": "start this new run from a branch point folder (<run>/branches/epoch_<E>): its weights, "
                   "optimizer, replay, counters and metrics, under this command's settings (loss settings included)",
    "sample_actions_train": "sample actions while collecting (else the policy's mode)",
    "sample_actions_eval": "sample actions while evaluating (else the policy's mode)",
    # envs
    "parallel_envs": "number of batched training envs (the original's --parallel_actors)",
    "action_counts": "add the observation 'action_counts' (how often each discrete action was taken in this trial; "
                     "envs.ActionCounts) to the training and eval envs",
    # collection
    "collect": "sync: collect an epoch, then update (one process); async: TorchRL MultiAsyncCollector workers collect "
               "while the learner updates; distributed: workers on other machines (docs/scaling.md)",
    "num_collectors": "collector worker processes (async / distributed); each runs parallel_envs / num_collectors envs",
    "collector_batch_steps": "env steps per env in one worker batch (default: a quarter of --timesteps_per_epoch)",
    "policy_sync_interval": "async / distributed: push the acting weights to the workers every this many updates",
    "replay_ratio": "async / distributed: updates per stored env step the learner holds (it waits when ahead; "
                    "default: grads_per_epoch / (parallel_envs x timesteps_per_epoch), the sync loop's ratio)",
    "collector_timeout_s": "async / distributed: no batch from any worker for this long is an error (hung worker)",
    "collector_address": "distributed: address of the cluster the collector workers run on (docs/scaling.md)",
    # replay
    "max_seq_len": "context length: steps per training window (and the acting policy's context)",
    "dset_max_size": "replay capacity in timesteps, FIFO (the original counts files)",
    "traj_save_len": "store long trials as non-overlapping snippets of at most this many steps, so learning "
                     "starts before a long episode ends (default: whole trials)",
    "sampling": "trial: uniform over stored trials (the original); timestep: proportional to trial length",
    "trim_windows": "cut each sampled [B, T] batch to its longest valid window, as the original pads a batch only "
                    "to its longest trial (--no-trim_windows: always max_seq_len steps, fixed shapes for compile)",
    "pack_windows": "which batches the loss runs several windows to a row (fewer rows, the same loss and "
                    "gradients) when the trajectory encoder keeps them apart (transformer, ff): cpu = batches on the "
                    "CPU (on a GPU planning is a host sync that costs more than it saves), always, never",
    "padded_sampling": "none: windows start in [0, L-T]; right: in [0, L-1] (windows may run off the end)",
    "min_trials_to_learn": "finished trials in the replay before the first update",
    # model
    "traj_encoder": "trajectory encoder (sequence model)",
    "memory_size": "width of the trajectory encoder (d_model / hidden size)",
    "memory_layers": "depth of the trajectory encoder",
    "n_heads": "attention heads (transformer)",
    "pos_emb": "transformer positions: fixed sinusoid, learnable table (needs --max_time_idx) or rope",
    "max_time_idx": "largest time_idx + 1 of the learnable position table (required by --pos_emb learnable)",
    "dropout": "transformer dropout (feed-forward and embedding)",
    "tstep_hidden": "width of the timestep encoder's MLP (CNN encoder: image feature size)",
    "tstep_layers": "layers of the timestep encoder's MLP",
    "tstep_out": "output width of the timestep encoder",
    "tstep_normalize_inputs": "normalise the MLP timestep encoder's inputs with running statistics",
    "image_key": "observation key of an image: the timestep encoder is then a CNN on it (default: an MLP)",
    "cnn": "CNN backbone of the image timestep encoder (with --image_key)",
    "drqv2_aug": "DrQ-v2 random-shift augmentation of the images in training (with --image_key)",
    "obs_keys": "observation keys the MLP timestep encoder reads (default: all of the env's)",
    "actor_hidden": "width of the actor head",
    "critic_hidden": "width of the critic heads",
    # agent / loss
    "agent_type": "agent (AMAGO: scalar critics, DPG + filtered BC) or multitask (AMAGO-2: two-hot critic, "
                  "filtered BC only)",
    "gamma": "the acting discount (the last of the trained gammas)",
    "count_heads": "discrete actions: the actor's and critics' output for each action also reads how often that "
                   "action was taken in the trial, through weights shared by all actions (modules.count_heads; "
                   "turns on --action_counts)",
    "critic_zero_init": "start the critics' last layer at zero (Q = 0 everywhere) or random (the original); default: "
                        "the critic's own (zero for discrete actions, random for continuous and two-hot)",
    "multigammas": "auxiliary discounts trained beside --gamma (default: the original's set)",
    "num_critics": "critic ensemble size",
    "num_critics_td": "ensemble members drawn for each TD target (REDQ)",
    "online_coeff": "weight of the DPG actor term (default: 1 for agent, 0 for multitask and multi-binary actions)",
    "offline_coeff": "weight of the filtered-BC actor term (default: 0.1 for agent, 1 for multitask)",
    "entropy_coeff": "weight of a policy-entropy bonus in the actor loss, discrete actions only (not in the "
                     "original; 0 = off)",
    "cql_coeff": "weight of a conservative term in the critic loss, logsumexp_a Q(s, a) - Q(s, a_buffer), per-action "
                 "critics only (CQL; not in the original; 0 = off; default: 0.1, ramped in after the run's first "
                 "tenth, where a discount is >= 0.9999, else 0)",
    "cql_ramp": "START END fractions of the run's updates: the conservative term is off before START and reaches "
                "--cql_coeff at END, linearly (0 0: full weight from the first update; default: 0.1 1 for the "
                "default weight, 0 0 for a set one)",
    "critic_loss_weight": "weight of the critic loss",
    "reward_multiplier": "rewards are scaled by this inside the loss",
    "popart": "PopArt-normalise the critic targets (two-hot critics use its statistics only for the DPG term)",
    "popart_beta": "PopArt's EMA rate",
    "popart_init_nu": "PopArt's initial second moment",
    "max_nonfinite_updates": "stop the run after this many updates in a row skipped for NaN/inf (batch, loss or "
                             "gradient)",
    "nonfinite_data": "NaN/inf in offline trials: 'error' (name the key) or 'drop' (drop those trials, counted); "
                      "env data with NaN/inf is always an error",
    "popart_min_sigma_ratio": "floor of each gamma's PopArt sigma as a share of the largest gamma's sigma (0 = off); "
                              "0.1 caps how much a near-constant-return gamma's errors are amplified",
    "popart_min_sigma": "floor of PopArt's sigma in scaled-reward units; ~1 stops a gamma with near-constant "
                        "returns (e.g. 0.1 under a constant reward) from dominating the clipped gradient",
    "n_step": "n-step TD returns (stop at terminated and at padding; truncated bootstraps)",
    "n_step_cut": "an n-step return also stops before a buffer action that the target policy rates below this x "
                  "its most likely action's probability (0: never, plain n-step returns; 1: any non-greedy action, as "
                  "Watkins' Q(lambda); continuous actions: 0 or 1, and 1 gives 1-step returns)",
    "n_step_stop_explored": "an n-step return also stops before a buffer action that exploration changed (the "
                            "'explored' entry the exploration modules write; continuous: every noisy action); the "
                            "policy's own sampled actions keep it going (not in the original)",
    "n_step_min_gamma": "gammas below this keep 1-step returns when --n_step > 1 (0: every gamma is n-step)",
    "tree_backup": "n-step Tree Backup targets (discrete actions, per-action critic, with --n_step_cut 0): each "
                   "later step counts with the target policy's probability of its buffer action (not in the "
                   "original)",
    "fbc_filter": "advantage filter f(A) of the filtered-BC term",
    "fbc_filter_kwargs": "KEY=VALUE arguments of the filter, e.g. beta=2 add_binary=0 (see objectives/filters.py)",
    "num_actions_for_value_in_critic_loss": "actions sampled for E_pi Q in the TD target (action-input critics)",
    "num_actions_for_value_in_actor_loss": "actions sampled for V(s) in the advantage (default: 1 for agent, "
                                           "3 for multitask)",
    "use_target_actor": "sample the TD target's next action from the target actor (else the online one)",
    "target_backbone": "when a discount reaches --target_backbone_min_gamma, TD targets read s_{t+1} from a "
                       "Polyak-averaged copy of the encoders, so they do not jump with every move of the online "
                       "encoders (one more encoder forward per update; not in the original; docs/api/objectives.md); "
                       "--no-target_backbone: never",
    "target_backbone_min_gamma": "a discount at or above this builds the encoders' copy (0: always); no copy when no "
                                 "discount reaches it, as with the default discounts (at most 0.999)",
    "target_backbone_all_gammas": "every discount's TD targets read the copy once it is built; "
                                  "--no-target_backbone_all_gammas: only those >= --target_backbone_min_gamma",
    "actor_encoder_grad": "actor-loss terms whose gradients train the shared encoders: all (the original), bc (filtered "
                          "BC only; DPG moves the actor head alone) or none (the critic alone trains them)",
    "gumbel_temperature": "straight-through Gumbel-softmax temperature of discrete DPG through an action-input critic",
    "tau": "Polyak factor of the target actor and critics (AMAGOSoftUpdate after every optimizer step)",
    "target_backbone_tau": "Polyak factor of the encoders' target copy (--target_backbone; AMAGOSoftUpdate)",
    "continuous_dist": "policy distribution for continuous actions",
    "discrete_clip": "LOW HIGH clip of the discrete policy's probabilities (the loss softens buffer actions with it)",
    "two_hot_bins": "bins of the two-hot critic (multitask)",
    "two_hot_min_return": "lowest return of the two-hot critic's bins",
    "two_hot_max_return": "highest return of the two-hot critic's bins",
    # exploration
    "exploration": "egreedy (annealed epsilon), bilevel (also decays within each trial) or none",
    "eps_start": "epsilon at the start of training (bilevel: at the start of a trial; it decays within the trial)",
    "eps_end": "epsilon after --eps_steps_anneal (bilevel: at the start of a trial)",
    "eps_steps_anneal": "batched env steps over which epsilon anneals",
    # optimisation
    "batch_size": "windows per gradient update",
    "learning_rate": "AdamW learning rate",
    "lr_warmup_steps": "linear learning-rate warm-up in updates",
    "lr_decay": "after the warm-up, bring the learning rate down over the run's updates to --lr_final_ratio of it "
                "(cosine or linear), or keep it (none, the original's)",
    "lr_final_ratio": "--lr_decay: the learning rate at the run's last update, as a fraction of --learning_rate",
    "grad_clip": "global gradient-norm clip",
    "l2_coeff": "AdamW weight decay",
    "mixed_precision": "autocast dtype of the learner",
    "compile_loss": "torch.compile the loss forward and backward with this mode (reduce-overhead: CUDA graphs on a "
                    "GPU); needs --no-trim_windows, and --pack_windows never where batches are packed (on the CPU by "
                    "default). It does not pay on a CPU (docs/scaling.md)",
    "cuda_graph": "capture the whole update (loss forward and backward, clip, AdamW, target update) as CUDA graphs and "
                  "replay them: far fewer kernel launches on a GPU. Needs --device cuda and --no-trim_windows; not "
                  "with --compile_loss or torchrun (docs/scaling.md)",
    "num_threads": "torch CPU threads (default: torch's own)",
}


def markdown_table() -> str:
    """Every flag with its default, choices and help as a markdown table: the reference in docs/api/trainers.md is
    this output (`python -m torchrl_amago.trainers.flag_help`; a test keeps the two equal)."""
    import dataclasses

    from .config import FIELD_CHOICES, TrainConfig

    base = TrainConfig()
    rows = ["| flag | default | help |", "|---|---|---|"]
    for f in dataclasses.fields(TrainConfig):
        choices = FIELD_CHOICES.get(f.name)
        text = FIELD_HELP[f.name] + (" (" + " \\| ".join(map(str, choices)) + ")" if choices else "")
        rows.append(f"| `--{f.name}` | `{getattr(base, f.name)!r}` | {text} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
