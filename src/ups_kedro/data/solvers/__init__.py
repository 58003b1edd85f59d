"""Reference PDE solvers for the built-in data sets, in plain numpy/scipy.

Everything here is periodic and Fourier pseudo-spectral, so the solvers are cheap, vectorised over
a batch of trajectories, and accurate to well below the errors of the surrogates they train.

Conventions
-----------
* 1D grids are the PDEBench cell centres ``x_i = (i + 0.5) / X`` on ``[0, 1)``
  (:func:`cell_centres`). 2D grids use the same convention on both axes; in ``[B, X, Y]`` axis 1
  is x and axis 2 is y.
* Solvers return channel-free arrays, 1D ``[B, T, X]`` and 2D ``[B, T, X, Y]``; the caller adds
  channel axes. Computation is always float64; ``dtype`` only chooses how the result is stored.
* ``t_save`` lists the output times (strictly increasing, ``t_save[0] >= 0``). The state at
  ``t = 0`` is the given initial condition, so with ``t_save[0] == 0`` frame 0 *is* the input,
  bit for bit.
* Between two save times a solver takes an integer number of equal substeps, so every frame lands
  exactly on its requested time (no interpolation).

Equations
---------
* Burgers (PDEBench form): ``u_t + (u^2/2)_x = (nu/pi) u_xx``. Note the 1/pi: ``nu = 0.01`` is
  an actual viscosity of 0.00318.
* Advection: ``u_t + beta u_x = 0``, solved exactly.
* 2D incompressible Navier-Stokes, vorticity form on ``[0, 1)^2``:
  ``w_t + u.grad w = nu Lap w + f``, ``Lap psi = -w``, ``u = psi_y``, ``v = -psi_x``.

Time stepping is ETDRK4 (Cox & Matthews 2002) with coefficients from the contour integrals of
Kassam & Trefethen (2005), which avoid the cancellation error of the closed-form phi-functions
for small ``|L dt|``. Quadratic terms are dealiased with the 2/3 rule.
"""

from ups_kedro.data.solvers.advection import solve_advection
from ups_kedro.data.solvers.burgers import (
    advection_initial_conditions,
    burgers_default_steps,
    burgers_initial_conditions,
    solve_burgers,
)
from ups_kedro.data.solvers.spectral import cell_centres
from ups_kedro.data.solvers.vorticity import solve_vorticity2d, vorticity_initial_conditions

__all__ = [
    "cell_centres",
    "burgers_initial_conditions",
    "advection_initial_conditions",
    "burgers_default_steps",
    "solve_burgers",
    "solve_advection",
    "vorticity_initial_conditions",
    "solve_vorticity2d",
]
