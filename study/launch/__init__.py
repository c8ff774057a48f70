"""Where runs execute: one small module per launcher behind one interface (core)."""

from study.launch.core import LAUNCHERS, Launcher, LaunchReport, get_launcher

__all__ = ["LAUNCHERS", "Launcher", "LaunchReport", "get_launcher"]
