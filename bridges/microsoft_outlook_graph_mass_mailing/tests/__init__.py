from . import test_mailing_forecast
