"""The cluster in the portal (issue 17): the nodes of every role and the worker jobs' lease holders."""
