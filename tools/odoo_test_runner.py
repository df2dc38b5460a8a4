"""Start Odoo's server command, optionally running at-install tests with every module loaded.

Usage: ``python odoo_test_runner.py --odoo-src=DIR [--all-modules-loaded] -- <odoo options>``

Odoo runs a module's at-install tests while the registry holds only that module
and its dependencies, so a test of ``mail`` never sees an addon that extends
``mail`` later. With ``--all-modules-loaded`` on an installed database, the
post-install phase also runs the selected at-install tests, against the full
registry: the question "does this addon break Odoo's mail?" asked honestly.
"""

import argparse
import sys


def run_at_install_tests_post_install(loader):
    make_suite = loader.make_suite

    def make_suite_with_every_module(module_names, position="at_install"):
        suite = make_suite(module_names, position)
        if position != "post_install":
            return suite
        tests = [*make_suite(module_names, "at_install"), *suite]
        return type(suite)(sorted(tests, key=lambda test: getattr(test, "test_sequence", 0)))

    loader.make_suite = make_suite_with_every_module


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--odoo-src", required=True)
    parser.add_argument("--all-modules-loaded", action="store_true")
    options, odoo_args = parser.parse_known_args()
    odoo_args = [arg for arg in odoo_args if arg != "--"]
    sys.path.insert(0, options.odoo_src)

    import odoo.cli  # noqa: PLC0415 - Odoo is importable only from here on
    from odoo.tests import loader  # noqa: PLC0415

    if options.all_modules_loaded:
        run_at_install_tests_post_install(loader)
    sys.argv = ["odoo-bin", *odoo_args]
    odoo.cli.main()


if __name__ == "__main__":
    main()
