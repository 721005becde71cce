"""mazerunner_relabel_rewards reproduces the env's rewards for any goal list (checked by replaying the env)."""
import torch
from tensordict import TensorDict

from torchrl_amago.envs import MazeRunner, mazerunner_relabel_rewards


def test_relabel_hand_computed():
    ach = torch.tensor([[5, 5], [5, 6], [5, 6], [5, 7], [4, 7], [5, 7]])
    goals = torch.tensor([[5, 6], [5, 7], [5, 6]])
    r, term, g = mazerunner_relabel_rewards(ach, goals)
    assert r.tolist() == [1, 0, 1, 0, 0]  # one goal per step, in order; the 3rd (5,6) is never revisited
    assert term.tolist() == [False] * 5
    assert g[0].tolist() == goals.tolist() and g[1].tolist() == [[-1, -1], [5, 7], [5, 6]]
    assert g[3].tolist() == [[-1, -1], [-1, -1], [5, 6]] and g[5].tolist() == g[3].tolist()
    r, term, _ = mazerunner_relabel_rewards(ach, goals[:2])
    assert r.tolist() == [1, 0, 1, 0, 0] and term.tolist() == [False, False, True, False, False]
    _, term, _ = mazerunner_relabel_rewards(ach, goals, time_limit=4)
    assert term.tolist() == [False, False, False, True, True]
    # the start cell is never a hit at t = 0: only after a move (or a "stay")
    r, _, _ = mazerunner_relabel_rewards(ach, torch.tensor([[5, 5], [5, 6]]))
    assert r.tolist() == [0, 0, 0, 0, 0]


def test_relabel_matches_env_replay():
    N, T, k, d = 6, 40, 3, 9
    env = MazeRunner(N, maze_dim=d, num_goals=k, time_limit=T, randomized_actions=True, seed=1,
                     categorical_action_encoding=True)
    env.reset()
    task = env.get_task()
    g = torch.Generator().manual_seed(0)
    actions = torch.randint(5, (T, N), generator=g)
    ach = [env.reset(task=task)["achieved"][:, 0]]
    for t in range(T):
        ach.append(env.step(TensorDict(action=actions[t], batch_size=[N]))["next", "achieved"][:, 0])
    ach = torch.stack(ach, 1)  # [N, T+1, 2]
    # hindsight goals: cells the agent visited at random times (repeats and the start cell included)
    times = torch.sort(torch.randint(0, T + 1, (N, k), generator=g), -1).values
    new_goals = ach.gather(1, times.unsqueeze(-1).expand(N, k, 2))
    rew, term, goals_seq = mazerunner_relabel_rewards(ach, new_goals, time_limit=T)
    assert rew.sum() > 0
    # replay the env on the same maze/action map with the relabeled goals
    task["goals"] = new_goals
    td = env.reset(task=task)
    env_rew, env_term, env_goals = [], [], [td["goals"]]
    for t in range(T):
        nxt = env.step(TensorDict(action=actions[t], batch_size=[N]))["next"]
        assert torch.equal(nxt["achieved"][:, 0], ach[:, t + 1])
        env_rew.append(nxt["reward"][:, 0])
        env_term.append(nxt["terminated"][:, 0])
        env_goals.append(nxt["goals"])
    env_rew, env_term, env_goals = torch.stack(env_rew, 1), torch.stack(env_term, 1), torch.stack(env_goals, 1)
    for i in range(N):
        end = int(env_term[i].long().argmax())  # the env's episode ends at its first terminated step
        assert torch.equal(rew[i, :end + 1], env_rew[i, :end + 1]), i
        assert torch.equal(term[i, :end + 1], env_term[i, :end + 1]) and term[i, end]
        assert torch.equal(goals_seq[i, :end + 2], env_goals[i, :end + 2])
