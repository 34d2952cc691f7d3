"""locara_ros: local voice and vision for ROS 2 robots.

The installed package also holds the generated interfaces (``locara_ros.msg``,
``locara_ros.srv``); rosidl installs an empty ``__init__.py`` there, so this file must stay
free of side effects. ``extend_path`` lets a source checkout that happens to be first on
``sys.path`` still find the generated modules of the installed package.
"""
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
