"""Code the tests share (not collected: no module here is named ``test_*``).

``tests`` is on ``sys.path`` (``pythonpath`` in pyproject.toml), so tests import ``from support.modules import ...``;
CLI runs load the callbacks here by class path (``support.kill.KillAt``, ``support.modules.PlainEncoder``).
"""
