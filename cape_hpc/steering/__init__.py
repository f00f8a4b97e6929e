"""Steering: direction calibration, batched steered greedy generation, intervention statistics."""
from cape_hpc.steering.steer import (Direction, SteeringResult, calibrate_direction, greedy_generate,
                                     run_steering, steering_hook, wilson_interval)

__all__ = ["Direction", "SteeringResult", "calibrate_direction", "greedy_generate", "run_steering",
           "steering_hook", "wilson_interval"]
