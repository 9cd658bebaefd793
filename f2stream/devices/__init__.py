"""Device management, beside :mod:`f2stream.pki`.

- :mod:`f2stream.devices.registry`: the registry of enrolled devices;
- :mod:`f2stream.devices.enrolment`: certificate, registry row and broker access in step;
- :mod:`f2stream.devices.dynsec`: the broker's dynamic-security client;
- :mod:`f2stream.devices.parameter_file`: parameter files (CSV, JSON) into the parameters database.
"""
