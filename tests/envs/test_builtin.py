"""Builtin batched envs: specs, dynamics (hand-computed trajectories), task sampling and seeding."""
import random
from collections import deque

import pytest
import torch
from tensordict import TensorDict
from torchrl.envs.utils import check_env_specs

from torchrl_amago.envs import DarkKeyDoor, MazeRunner, MetaFrozenLake, TMaze, make_amago_env
from torchrl_amago.envs.builtin import random_lake_maps, random_maze

ENVS = {
    "tmaze": lambda n, **kw: TMaze(n, corridor_length=4, **kw),
    "tmaze_active": lambda n, **kw: TMaze(n, corridor_length=4, passive=False, penalty=-0.1, **kw),
    "frozen_lake": lambda n, **kw: MetaFrozenLake(n, size=4, k_episodes=3, **kw),
    "frozen_lake_hard": lambda n, **kw: MetaFrozenLake(n, size=4, k_episodes=3, hard_mode=True, recover_mode=True,
                                                       slip_chance=0.2, **kw),
    "key_door": lambda n, **kw: DarkKeyDoor(n, size=4, max_episode_steps=5, meta_horizon=20, **kw),
    "key_door_light": lambda n, **kw: DarkKeyDoor(n, size=4, dark=False, randomize_actions=True, **kw),
    "mazerunner": lambda n, **kw: MazeRunner(n, maze_dim=9, num_goals=2, time_limit=30, randomized_actions=True,
                                             **kw),
}


@pytest.mark.parametrize("name", list(ENVS))
@pytest.mark.parametrize("n", [None, 1, 64])
def test_check_env_specs(name, n):
    check_env_specs(ENVS[name](n, seed=0))
    check_env_specs(make_amago_env(ENVS[name](n, seed=0, categorical_action_encoding=True)))


@pytest.mark.parametrize("name", ["tmaze", "frozen_lake", "key_door"])
def test_meta_trial_stack_specs(name):
    check_env_specs(make_amago_env(ENVS[name](64, seed=0), k_episodes=2, horizon=30, reset_mode="dummy_step"))


@pytest.mark.parametrize("name", list(ENVS))
def test_seeded_and_per_env_tasks(name):
    def run(seed):
        env = ENVS[name](8, seed=seed)
        env.reset()
        task = env.get_task()
        torch.manual_seed(0)
        ro = env.rollout(15, break_when_any_done=False)
        return task, ro
    (t1, r1), (t2, r2), (t3, _) = run(3), run(3), run(4)
    assert (t1 == t2).all() and (r1 == r2).all()
    assert not all((t1[k] == t3[k]).all() for k in t1.keys())
    # sub-envs draw their own tasks (8 envs never all share one task)
    for k in t1.keys():
        if k != "action_perm":
            assert not (t1[k] == t1[k][0]).all(), k


def step(env, actions):
    """Step with a list of action indices (one per env), return the "next" tensordict."""
    a = torch.tensor(actions)
    if not env.categorical_action_encoding:
        a = torch.nn.functional.one_hot(a, env.n_actions)
    td = TensorDict({"action": a.reshape(tuple(env.batch_size) + tuple(a.shape[1:]))}, env.batch_size)
    return env.step(td)["next"]


# ---------------------------------------------------------------- T-Maze
def test_tmaze_passive_optimal_and_wrong_turn():
    env = TMaze(4, corridor_length=3, penalty=-0.25)
    td = env.reset(task={"goal_y": torch.tensor([1, -1, 1, 1])})
    assert td["observation"].tolist() == [[0, 1], [0, -1], [0, 1], [0, 1]]
    rewards = []
    for t in range(3):  # env 3 wastes its first move going left (penalised)
        nxt = step(env, [0, 0, 0, 2 if t == 0 else 0])
        rewards.append(nxt["reward"].squeeze(-1).tolist())
        assert not nxt["done"].any()
    assert rewards[0] == [0, 0, 0, -0.25] and rewards[2] == [0, 0, 0, 0]
    assert nxt["observation"].tolist() == [[1, 0], [1, 0], [1, 0], [0, 0]]
    nxt = step(env, [1, 3, 3, 1])  # up, down, down (wrong), up (too late)
    assert nxt["reward"].squeeze(-1).tolist() == [1.0, 1.0, 0.0, 0.0]
    assert nxt["done"].all() and nxt["terminated"].all() and nxt["truncated"].all()
    assert nxt["observation"].tolist() == [[1, 1], [1, -1], [1, -1], [0, 0]]


def test_tmaze_active_oracle_shown_once():
    env = TMaze(None, corridor_length=2, passive=False, categorical_action_encoding=True)
    assert env.episode_length == 5
    td = env.reset(task={"goal_y": torch.tensor(-1)})
    assert td["observation"].tolist() == [0, 0]
    obs, rew = [], []
    for a in [2, 2, 0, 0, 0, 3]:  # left (see goal), left again (wasted: oracle not shown twice) ...
        nxt = step(env, [a])
        obs.append(nxt["observation"].tolist())
        rew.append(nxt["reward"].item())
        if nxt["done"]:
            break
    assert obs[:2] == [[0, -1], [0, 0]]
    assert len(obs) == 5 and rew[-1] == 0.0  # the wasted step leaves it one cell short of the junction

    td = env.reset(task={"goal_y": torch.tensor(-1)})
    for a in [2, 0, 0, 0]:
        nxt = step(env, [a])
    assert nxt["observation"].tolist() == [1, 0]
    nxt = step(env, [3])
    assert nxt["reward"].item() == 1.0 and nxt["done"].item()


# ---------------------------------------------------------------- Meta-Frozen-Lake
def _open_lake(env, n=1, holes=None):
    h = torch.zeros(n, env.size, env.size, dtype=torch.bool)
    for (i, j) in holes or []:
        h[:, i, j] = True
    return env.reset(task={"holes": h, "action_perm": torch.arange(5).repeat(n, 1)})


def test_frozen_lake_goal_soft_reset_and_trial_end():
    env = MetaFrozenLake(1, size=3, k_episodes=2)
    td = _open_lake(env)
    assert td["observation"].tolist() == [[0, 0, 1, 0]]
    for k in range(2):
        for a in [1, 1, 3]:  # down, down, right
            nxt = step(env, [a])
            assert nxt["reward"].item() == 0 and not nxt["episode_end"].item()
        assert nxt["observation"][0].tolist() == pytest.approx([2 / 3, 1 / 3, 0, k / 2])
        nxt = step(env, [3])  # reaches the goal (2, 2): reward 1, same-step soft reset
        assert nxt["reward"].item() == 1.0
        assert nxt["observation"][0].tolist() == pytest.approx([0, 0, 1, (k + 1) / 2])
        assert nxt["episode_end"].item() and nxt["episode_success"].item()
        assert nxt["episode_count"].item() == k + 1 and nxt["episode_return"].item() == 1.0
        assert nxt["terminated"].item() == (k == 1) and not nxt["truncated"].item()


def test_frozen_lake_hole_timeout_and_recover():
    env = MetaFrozenLake(2, size=3, k_episodes=5, max_episode_steps=3)
    _open_lake(env, 2, holes=[(1, 0)])
    nxt = step(env, [1, 0])  # env 0 falls in the hole, env 1 stays
    assert nxt["reward"].tolist() == [[0], [0]]
    assert nxt["episode_end"].squeeze(-1).tolist() == [True, False]
    assert not nxt["episode_success"].any() and nxt["observation"][0].tolist() == pytest.approx([0, 0, 1, 0.2])
    step(env, [0, 0])
    nxt = step(env, [0, 0])  # env 1 times out after 3 steps
    assert nxt["episode_end"].squeeze(-1).tolist() == [False, True]
    assert nxt["observation"][1].tolist() == pytest.approx([0, 0, 1, 0.2])

    rec = MetaFrozenLake(1, size=3, k_episodes=5, recover_mode=True)
    _open_lake(rec, 1, holes=[(1, 0)])
    nxt = step(rec, [1])
    assert nxt["reward"].item() == pytest.approx(-0.1) and not nxt["episode_end"].item()
    assert nxt["observation"].tolist() == [[0, 0, 0, 0]]  # stays on its cell, no reset


def test_frozen_lake_maps_have_a_path_and_default_horizon():
    g = torch.Generator().manual_seed(0)
    maps = random_lake_maps(200, 5, g)
    assert not maps[:, 0, 0].any() and not maps[:, -1, -1].any()
    assert 0.1 < maps.float().mean() < 0.2  # 0.2 per cell before rejecting path-less maps
    for m in maps[:50].tolist():  # independent BFS
        seen, q = {(0, 0)}, deque([(0, 0)])
        while q:
            i, j = q.popleft()
            for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                a, b = i + di, j + dj
                if 0 <= a < 5 and 0 <= b < 5 and not m[a][b] and (a, b) not in seen:
                    seen.add((a, b))
                    q.append((a, b))
        assert (4, 4) in seen
    assert MetaFrozenLake(1, size=5).max_episode_steps == 25
    assert MetaFrozenLake(1, size=5, hard_mode=True, slip_chance=0.5).max_episode_steps == 100


# ---------------------------------------------------------------- Dark Key-To-Door
def test_key_door_key_then_door_and_dummy_step():
    env = DarkKeyDoor(1, size=3, max_episode_steps=10, meta_horizon=8)
    env.reset(task={"start": torch.tensor([[0, 0]]), "key": torch.tensor([[0, 2]]),
                    "goal": torch.tensor([[2, 2]])})
    rewards, obs = [], []
    for a in [2, 2, 3, 3, 1, 2, 2, 4]:  # (0,+1) x2 -> key; (+1,0) x2 -> door; dummy; key again
        nxt = step(env, [a])
        rewards.append(nxt["reward"].item())
        obs.append(nxt["observation"][0].tolist())
    assert rewards == [0, 1, 0, 1, 0, 0, 1, 0]
    assert obs[1] == pytest.approx([0, 2 / 3, 1, 0.2])
    assert obs[3] == pytest.approx([2 / 3, 2 / 3, 1, 0.4])  # the end step shows the door cell
    assert obs[4] == [0, 0, 0, 0]  # dummy step: action ignored, attempt restarted
    assert obs[6] == pytest.approx([0, 2 / 3, 1, 0.2])
    assert nxt["done"].item() and nxt["terminated"].item() and nxt["truncated"].item()  # horizon 8


def test_key_door_timeout_and_stats():
    env = DarkKeyDoor(2, size=3, max_episode_steps=2, meta_horizon=50)
    env.reset(task={"start": torch.tensor([[0, 0], [0, 0]]), "key": torch.tensor([[0, 1], [2, 2]]),
                    "goal": torch.tensor([[0, 0], [2, 2]])})
    n1 = step(env, [2, 4])  # env 0 takes the key
    n2 = step(env, [0, 4])  # env 0 reaches the door; env 1 times out
    assert n1["reward"].squeeze(-1).tolist() == [1, 0] and n2["reward"].squeeze(-1).tolist() == [1, 0]
    assert n2["episode_end"].all() and n2["episode_success"].squeeze(-1).tolist() == [True, False]
    assert n2["episode_return"].squeeze(-1).tolist() == [2.0, 0.0] and n2["episode_count"].tolist() == [[1], [1]]
    n3 = step(env, [3, 3])
    assert n3["reward"].sum() == 0 and n3["observation"][:, :2].sum() == 0 and not n3["episode_end"].any()


# ---------------------------------------------------------------- MazeRunner
def _open_maze(d):
    m = torch.zeros(d, d, dtype=torch.bool)
    m[0], m[-1], m[:, 0], m[:, -1] = True, True, True, True
    return m


def test_mazerunner_goal_sequence_and_obs():
    d = 7
    env = MazeRunner(1, maze_dim=d, num_goals=2, time_limit=20)
    goals = torch.tensor([[[4, 3], [4, 5]]])
    td = env.reset(task={"maze": _open_maze(d)[None], "goals": goals, "action_perm": torch.arange(5)[None]})
    # start (5, 3); free cells: west 2, north 4, east 2, south 0
    assert td["obs"][0].tolist() == pytest.approx([5 / 7, 3 / 7, 2 / 7, 4 / 7, 2 / 7, 0.0, 0.0])
    assert td["achieved"].tolist() == [[[5, 3]]] and td["goals"].tolist() == goals.tolist()
    nxt = step(env, [3])  # south: wall, stays
    assert nxt["reward"].item() == 0 and nxt["achieved"].tolist() == [[[5, 3]]]
    nxt = step(env, [1])  # north -> (4, 3) = goal 0
    assert nxt["reward"].item() == 1 and nxt["goals"].tolist() == [[[-1, -1], [4, 5]]]
    assert not nxt["done"].item()
    rewards = [step(env, [a])["reward"].item() for a in (2, 4)]  # east (4,4), stay
    nxt = step(env, [2])  # east -> (4, 5) = goal 1: terminated
    assert rewards == [0, 0] and nxt["reward"].item() == 1
    assert nxt["terminated"].item() and not nxt["truncated"].item()
    assert nxt["goals"].tolist() == [[[-1, -1], [-1, -1]]]
    assert nxt["obs"][0, -1].item() == pytest.approx(5 / 20)


def test_mazerunner_time_limit_terminates():
    env = MazeRunner(2, maze_dim=7, num_goals=1, time_limit=3, seed=0)
    env.reset()
    for _ in range(3):
        nxt = step(env, [3, 3])  # south into the pocket wall: never moves
    assert nxt["truncated"].all() and nxt["terminated"].all()


def test_random_maze_character():
    for seed in range(5):
        m = random_maze(11, random.Random(seed))
        assert m[0].all() and m[-1].all() and m[:, 0].all() and m[:, -1].all()
        assert not m[6:10, 5].any() and m[7:10, 4].all() and m[7:10, 6].all()  # the spawn pocket
        assert 0.15 < m[1:-1, 1:-1].float().mean() < 0.6
        free = {(i, j) for i in range(11) for j in range(11) if not m[i, j]}
        seen, q = {(9, 5)}, deque([(9, 5)])
        while q:
            i, j = q.popleft()
            for a, b in ((i + 1, j), (i - 1, j), (i, j + 1), (i, j - 1)):
                if (a, b) in free and (a, b) not in seen:
                    seen.add((a, b))
                    q.append((a, b))
        assert seen == free  # every free cell is reachable from the start


@pytest.mark.parametrize("name", ["tmaze", "frozen_lake", "key_door", "mazerunner"])
def test_partial_hard_reset_redraws_only_masked_tasks(name):
    env = ENVS[name](8, seed=0)
    env.reset()
    before = env.get_task()
    mask = torch.tensor([True, False] * 4)
    env.reset(TensorDict({"_reset": mask.unsqueeze(-1)}, [8]))
    after = env.get_task()
    changed = torch.zeros(8, dtype=torch.bool)
    for k in before.keys():
        diff = (before[k] != after[k]).reshape(8, -1).any(-1)
        assert not diff[~mask].any(), k
        changed |= diff
    assert changed[mask].any()


def test_meta_trial_keeps_builtin_task_across_soft_resets():
    env = make_amago_env(TMaze(16, corridor_length=2, seed=0), k_episodes=3)
    ro = env.rollout(2 * 3 * 3, break_when_any_done=False)  # two trials of 3 episodes of 3 steps
    soft = ro["soft_reset"].squeeze(-1).bool()  # first obs of every episode: shows [0, goal_y]
    goal_seen = ro["observation"][..., 1]
    assert soft.sum(-1).tolist() == [6] * 16
    g = goal_seen[soft].view(16, 2, 3)
    assert (g != 0).all() and (g == g[..., :1]).all()  # same goal within each trial
    assert (g[:, 0, 0] != g[:, 1, 0]).any()  # trials redraw it


# ---------------------------------------------------------------- No-repeat
@pytest.mark.parametrize("n", [None, 1, 64])
def test_no_repeat_specs(n):
    from torchrl_amago.envs import NoRepeat

    check_env_specs(NoRepeat(n, num_actions=5, seed=0))
    check_env_specs(make_amago_env(NoRepeat(n, num_actions=5, seed=0, categorical_action_encoding=True)))
    with pytest.raises(ValueError, match="num_actions"):
        NoRepeat(n, num_actions=1)


def test_no_repeat_pays_fresh_actions_only_and_ends_after_num_actions_steps():
    from torchrl_amago.envs import NoRepeat

    env = NoRepeat(3, num_actions=4)
    env.reset()
    paid, ends, times = [], [], []
    for actions in ([0, 2, 3], [1, 2, 3], [0, 2, 1], [3, 2, 0]):
        nxt = step(env, actions)
        paid.append(nxt["reward"].squeeze(-1).tolist())
        ends.append(nxt["terminated"].squeeze(-1).tolist())
        times.append(nxt["observation"].squeeze(-1).tolist())
    assert paid == [[0.25] * 3, [0.25, 0.0, 0.0], [0.0, 0.0, 0.25], [0.25, 0.0, 0.25]]
    assert ends == [[False] * 3] * 3 + [[True] * 3]
    assert times == [[0.25] * 3, [0.5] * 3, [0.75] * 3, [1.0] * 3]
    # a partial reset restarts env 1 only: its next action is fresh again, env 0's repeat is not
    env.reset(TensorDict({"_reset": torch.tensor([[False], [True], [False]])}, [3]))
    assert step(env, [0, 2, 1])["reward"].squeeze(-1).tolist() == [0.0, 0.25, 0.0]


def test_no_repeat_random_policy_scores_its_closed_form():
    from torchrl_amago.envs.builtin.no_repeat import NoRepeat, random_return

    K, n = 8, 4096
    env = NoRepeat(n, num_actions=K, seed=0)
    torch.manual_seed(0)
    ro = env.rollout(K, break_when_any_done=False)  # uniform random actions from the spec
    returns = ro["next", "reward"].sum(1).squeeze(-1)
    assert random_return(K) == pytest.approx(0.6564, abs=1e-4)
    assert float(returns.mean()) == pytest.approx(random_return(K), abs=0.01)
    assert float(returns.max()) <= 1.0 and bool(ro["next", "done"][:, -1].all())
