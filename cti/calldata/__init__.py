"""Call-attached data: the JSON document that follows a customer call."""
