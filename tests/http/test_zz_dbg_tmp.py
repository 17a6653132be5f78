from tests.http.test_xds_error_codes import *  # noqa
from tests.http.test_xds_endpoints import xds  # noqa

def test_dbg(xds):
    patient_a, nir_a = xds.patient(122)
    patient_b, nir_b = xds.patient(123)
    original, _ = xds.deposit(nir_b)
    target = entry_uuid_of_deposit(xds, patient_b, original.document_unique_ids["Document01"])
    def appends(root):
        objects = root.find(f".//{RIM}RegistryObjectList")
        etree.SubElement(objects, f"{RIM}Association", id="as-apnd", associationType=v.ASSOC_APND, sourceObject="Document01", targetObject=target)
    appendix, response = deposit_mutated(xds, nir_a, appends)
    print(registry_status(response))
    docs = xds.client.get(f"/fhir/DocumentReference?patient={patient_a}", headers=auth(xds.tokens.practitioner(GP))).get_json()
    print(docs["entry"][0]["resource"].get("relatesTo"))
    slots = [("$XDSDocumentEntryUniqueId", [f"('{appendix.document_unique_ids['Document01']}')"]), ("$AssociationTypes", [f"('{v.ASSOC_APND}')"])]
    leaf = query(xds, adhoc(GET_RELATED_DOCUMENTS, slots), nir_a)
    print(leaf.get_data(as_text=True)[:3000])
    assert 0
