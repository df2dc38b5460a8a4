"""Microsoft's refusals in the language of the user who reads them.

The one place a :class:`~..services.errors.GraphError` becomes text for Odoo (a
UserError, a mail's failure reason, a server's last error, a notice, a page).
services/ keeps each sentence as an English template marked for the .pot; it is
translated here in the environment's language, then its values are filled in, so a
translator never sees (nor breaks) a value. ``str(error)`` stays English for logs.
"""


def _translator(env):
    def translate(sentence):
        # env._ finds this addon's translations from the module of its caller: this one.
        return env._(sentence)

    return translate


def graph_error_sentence(env, error):
    """What happened and what to do, in ``env``'s language (``error.user_message``)."""
    return error.message(_translator(env))


def graph_error_text(env, error):
    """The sentence, Microsoft's reference and Microsoft's own words (``str(error)``)."""
    return error.describe(_translator(env))
