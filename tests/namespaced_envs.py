"""A gymnasium env registered under a namespace, as plugin packages (shimmy's dm_control/...)
register theirs: importing this module registers ``mbpo_test/Pendulum-v0`` (gymnasium's
Pendulum, 200 steps). Sweeps name it ``namespaced_envs:mbpo_test/Pendulum-v0`` (gymnasium
imports the module before it looks the id up), an id with both ':' and '/'."""
import gymnasium as gym

ENV_ID = "mbpo_test/Pendulum-v0"
QUALIFIED_ID = f"{__name__}:{ENV_ID}"

if ENV_ID not in gym.registry:
    gym.register(ENV_ID, entry_point="gymnasium.envs.classic_control.pendulum:PendulumEnv", max_episode_steps=200)
