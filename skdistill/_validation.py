"""Checks shared by every estimator of the package."""

import functools

__all__ = ["restore_on_error"]


def restore_on_error(fit):
    """Decorate ``fit`` so that a failure leaves the estimator exactly as it was.

    ``validate_data`` sets ``n_features_in_`` before the package's own checks run; without
    this a refused fit would leave a half-fitted estimator (or spoil a previous fit).
    """

    @functools.wraps(fit)
    def wrapper(self, *args, **kwargs):
        saved = dict(vars(self))
        try:
            return fit(self, *args, **kwargs)
        except Exception:
            vars(self).clear()
            vars(self).update(saved)
            raise

    return wrapper
