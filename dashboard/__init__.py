"""Live dashboard of a market on its network (Mesa's SolaraViz): ``python run.py dashboard``."""
