"""nlc's version, in a module of its own: the back ends stamp it into what they write (generated
headers, run configs) and must not import the `nlc` package facade, which imports them."""

__version__ = "0.1.0"
