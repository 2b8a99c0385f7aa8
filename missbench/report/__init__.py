"""The report layer: tables and figures from the results store; never imports a method or the engine."""
