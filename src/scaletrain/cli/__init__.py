"""The command line: override checks, ``resume=``, one-line errors, and the flow that
``train`` and ``eval`` share."""
