"""The survey graph (Plan -> Retrieve -> Write -> Check/Revise -> Frame -> Render) over survey/'s domain code.

Import `agents.survey.graph` / `agents.survey.runner` directly; this file imports nothing.
"""
