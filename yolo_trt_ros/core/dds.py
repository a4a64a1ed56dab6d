"""Which Fast DDS this ROS ships, and the environment variable it reads its XML profile
from: Fast DDS 3 (Kilted on) reads FASTDDS_DEFAULT_PROFILES_FILE, Fast DDS 2 (Humble,
Jazzy) only FASTRTPS_DEFAULT_PROFILES_FILE. Setting the one the other reads does nothing:
until 2026-12-06 the launch set only the first, and Jazzy's nodes ran on Fast DDS's
defaults whatever dds_profile said (test/test_dds_profiles.py)."""
from __future__ import annotations

import os
from collections.abc import Mapping
from importlib import metadata

FAST_DDS_3_VARIABLE = 'FASTDDS_DEFAULT_PROFILES_FILE'
FAST_DDS_2_VARIABLE = 'FASTRTPS_DEFAULT_PROFILES_FILE'
PROFILE_VARIABLES = (FAST_DDS_3_VARIABLE, FAST_DDS_2_VARIABLE)


def fast_dds_3() -> bool:
    """Whether this ROS ships Fast DDS 3 (Kilted on): from the pip route's rclpy wheel
    (rclpy 9 is Kilted's) where there is one, since ROS_DISTRO in that venv's shell may
    name another install; else from a sourced install's ROS_DISTRO."""
    major = _major('ros-rclpy')
    if major is not None:
        return major >= 9
    distro = os.environ.get('ROS_DISTRO')
    if distro:
        return distro not in ('humble', 'iron', 'jazzy')
    major = _major('rclpy')
    return True if major is None else major >= 9


def _major(distribution: str) -> int | None:
    try:
        return int(metadata.version(distribution).split('.')[0])
    except (metadata.PackageNotFoundError, ValueError):
        return None


def profile_variable() -> str:
    """The variable this ROS's Fast DDS reads its profile from."""
    return FAST_DDS_3_VARIABLE if fast_dds_3() else FAST_DDS_2_VARIABLE


def own_profile(env: Mapping[str, str]) -> str | None:
    """The profile env gives this Fast DDS, if any (rmw of Fast DDS 3 still reads the old
    name, with a deprecation warning; Fast DDS 2 never reads the new one)."""
    names = PROFILE_VARIABLES if fast_dds_3() else (FAST_DDS_2_VARIABLE,)
    return next((env[name] for name in names if env.get(name)), None)


def profile_env(env: Mapping[str, str], path: str) -> dict[str, str]:
    """The variable that makes path the Fast DDS profile, or none where env gives one."""
    return {} if own_profile(env) else {profile_variable(): path}


def with_profile(env: Mapping[str, str], path: str) -> dict[str, str]:
    """env with path as its Fast DDS profile, unless env already gives one."""
    return {**env, **profile_env(env, path)}


def unread_profile_note(env: Mapping[str, str]) -> str | None:
    """What the launchers say where env gives a profile only in the variable this Fast
    DDS does not read (Fast DDS 3's name on Humble or Jazzy): it is not used, and until
    2026-12-06 it was replaced by the shipped profile without a word."""
    unread = env.get(FAST_DDS_3_VARIABLE)
    if fast_dds_3() or not unread or own_profile(env):
        return None
    return (f'{FAST_DDS_3_VARIABLE}={unread} is not read by the Fast DDS of this ROS '
            f'(Humble, Jazzy): set {FAST_DDS_2_VARIABLE}={unread} to use it; the nodes get '
            'the dds_profile instead')
