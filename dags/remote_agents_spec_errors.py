"""Invalid environment specs, in Airflow's import-error view ("Dag import errors").

This file holds no Dag. It raises one error listing every spec in include/environments/ that fails
validation, with one line per problem, so that Airflow shows them where it shows every broken Dag
file. Raising here drops no Dag: each invalid spec's bootstrap, teardown, health and drift Dags still
exist in the other files, as Dags whose one task reports the same problems. Parsing reads only
the spec files.
"""

from __future__ import annotations

from remote_agents.environments import environment_files, environments_folder, raise_spec_errors

raise_spec_errors(environment_files(environments_folder(__file__)))
