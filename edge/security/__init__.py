"""What the edge checks before it trusts a request, in one package: the gate every image
request passes (`gate`), URL signatures (`signing`), the allow-list of source hosts
(`sources`), the network guard for absolute-URL sources (`netguard`) and the limits on
what a source may cost (`limits`)."""
