"""Test support shipped with the operator, as ``kopf.testing`` ships with kopf.

Nothing here runs in production: the operator's own modules never import it
(an import-linter contract says so). It lives in the package rather than under
``tests/`` because ``coordshard bench operator`` drives the same API-server
double as the tests.
"""
