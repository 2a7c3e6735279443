"""The swath transformer: regrids Level 2 swaths (2-D lat/lon geolocation) onto a projected grid."""
