"""What every listening port of ours shares: who is let in at accept, and how many
(:mod:`cti.net.admission`), and the accept loop that asks it (:mod:`cti.net.listener`).
FastAGI (:mod:`cti.agi`) and the sidebar's HTTP (:mod:`cti.screenpop`) both use them."""
