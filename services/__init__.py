"""Plain Python services of the addon: no ``odoo`` import lives below this package.

Models and controllers hand them plain values (endpoints, client id, tokens,
callbacks) and get plain values or the typed errors of ``services.errors`` back.
"""
