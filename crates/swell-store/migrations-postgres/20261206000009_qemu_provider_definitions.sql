-- Provider definitions of kind `qemu` (issue 19), as in SQLite's
-- 20261206000012_qemu_provider_definitions: the kind's CHECK admits `qemu`.

ALTER TABLE providers DROP CONSTRAINT providers_kind_check;
ALTER TABLE providers
    ADD CONSTRAINT providers_kind_check CHECK (kind IN ('process', 'docker', 'openstack', 'qemu'));
